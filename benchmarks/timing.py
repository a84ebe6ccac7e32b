"""Timing helpers for the benchmarks: side by side, warmed up, alternating, medians.

* :func:`interleaved` — every repetition runs every contender once, in alternating order
  (forward on even, backward on odd repetitions), each sample repeating the call until it
  lasts about ``sample_s``; all contenders are compiled and warmed up first.
* :func:`ratio` — ``t_a / t_b`` as the median of the per-repetition ratios: both ran back to
  back in every repetition, so a load change that slows both cancels out.
* :func:`compile_seconds` — ``jax.jit(f).lower(*args).compile()`` of a fresh function, with
  JAX's caches cleared first, the median of ``reps`` compiles.
"""

from __future__ import annotations

import gc
import statistics
import time

import jax


def seconds_per_call(f, args, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        out = f(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / number


def calls_per_sample(f, args, sample_s: float) -> int:
    """How many calls of ``f`` last about ``sample_s`` (after compiling and warming up)."""
    for _ in range(3):
        jax.block_until_ready(f(*args))
    return max(1, round(sample_s / min(seconds_per_call(f, args, 1) for _ in range(5))))


def interleaved(fns: dict, args, reps: int, sample_s: float = 5e-3) -> dict[str, list[float]]:
    """``reps`` samples of the seconds per call of every function in ``fns`` (all called
    with ``args``), the contenders alternating their order every repetition."""
    number = {name: calls_per_sample(f, args, sample_s) for name, f in fns.items()}
    samples = {name: [] for name in fns}
    gc.collect()
    for rep in range(reps):
        for name in list(fns) if rep % 2 == 0 else list(fns)[::-1]:
            samples[name].append(seconds_per_call(fns[name], args, number[name]))
    return samples


def blocks(fns: dict, args, reps: int, sample_s: float = 5e-3) -> dict[str, list[float]]:
    """Like :func:`interleaved`, but each contender's repetitions run in one block (for a
    contender whose threads keep spinning after it returns and would slow the next one)."""
    return {name: interleaved({name: f}, args, reps, sample_s)[name] for name, f in fns.items()}


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def ratio(samples: dict, a: str, b: str) -> float:
    """``t_a / t_b``: the median of the paired per-repetition ratios."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def spread(samples: dict, a: str, b: str) -> float:
    """Half the interquartile range of the paired ratios ``t_a / t_b``: the noise of
    :func:`ratio` on this machine, in this run."""
    q1, _, q3 = statistics.quantiles([x / y for x, y in zip(samples[a], samples[b])], n=4)
    return (q3 - q1) / 2


def compile_seconds(make_fn, args, reps: int = 3) -> float:
    """Median seconds of ``jax.jit(make_fn()).lower(*args).compile()`` (trace, lower and XLA
    compile), each time with a fresh function and JAX's caches cleared."""
    times = []
    for _ in range(reps):
        jax.clear_caches()
        fn = jax.jit(make_fn())
        start = time.perf_counter()
        fn.lower(*args).compile()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
