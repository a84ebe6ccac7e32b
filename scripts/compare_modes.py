"""Forward vs reverse mode: when does each one win? (S17, S18, S19) — fnn's main script.

The full Jacobian ``J_nn(x)`` of shape ``(M_out, D_in)`` costs ``D_in`` tangent passes by
forward accumulation and ``M_out`` cotangent passes by reverse accumulation (backprop). This
script measures it: for a sweep of networks ``D → hidden → M`` (input width fixed, output
width from 1 to ≫ D, and the mirror) it times, jit-compiled, warmed up and interleaved,

  fwd      fnn.jacobian(method="forward")     tangent matrix I_D pushed input → output
  rev      fnn.jacobian(method="reverse")     row matrix I_M pulled output → input
  explicit the dense chain J_out·Wᴺ·…·J¹·W¹, left to right (S17, dense J_f = diag(f′))
  jacfwd   jax.jacfwd                       JAX's forward mode, the witness
  jacrev   jax.jacrev                       JAX's reverse mode, the reference
  central  central differences              (small input widths only)

checks every result against ``jax.jacrev``, prints a table and a verdict, and writes
``results/compare_modes.json`` and ``results/compare_modes.png``.

  python scripts/compare_modes.py                 # the default sweep (well under a minute)
  python scripts/compare_modes.py --quick         # a few seconds, small networks
  python scripts/compare_modes.py --dtype float64 --reps 41 --sizes 1,10,100,1000
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnn
from fnn import cost_model, numerical

CONTENDERS = ("fwd", "rev", "explicit", "jacfwd", "jacrev", "central")
FULL = {"hidden": (256, 256), "sizes": (1, 3, 10, 30, 100, 300, 784), "reps": 21}
QUICK = {"hidden": (32,), "sizes": (1, 10, 100), "reps": 3}
CENTRAL_MAX_WIDTH = 100  # central differences only where D_in ≤ this (2·D_in evaluations)
SAMPLE_S = 2e-3  # each timing sample repeats a call until it lasts about this long
FOCUS = ("fwd", "rev", "jacfwd", "jacrev")  # timed again on the two most lopsided shapes …
FOCUS_FACTOR = 5  # … with this many times the repetitions: the verdict's ratios need them
TOLERANCE = {  # max |J − J_jacrev| / max(1, max |J_jacrev|)
    "float32": {"ad": 1e-4, "central": 3e-2},
    "float64": {"ad": 1e-10, "central": 1e-5},
}


# ---------------------------------------------------------------------------------------
# The contenders: each a function (params, x) -> J of shape (M_out, D_in).
# ---------------------------------------------------------------------------------------


def central_differences(net, params, x):
    """``J[:, j] = (nn(x + h eⱼ) − nn(x − h eⱼ)) / 2h``, all ``j`` at once (S11)."""
    h = numerical.default_eps(x.dtype)
    E = h * jnp.eye(x.shape[0], dtype=x.dtype)
    return (fnn.apply(net, params, x + E) - fnn.apply(net, params, x - E)).T / (2 * h)


def contenders(net, with_central):
    def nn(params):
        return lambda x: fnn.apply(net, params, x)

    fns = {
        "fwd": lambda p, x: fnn.jacobian(net, p, x, method="forward"),
        "rev": lambda p, x: fnn.jacobian(net, p, x, method="reverse"),
        "explicit": lambda p, x: fnn.jacobian(net, p, x, method="explicit"),
        "jacfwd": lambda p, x: jax.jacfwd(nn(p))(x),
        "jacrev": lambda p, x: jax.jacrev(nn(p))(x),
        "central": lambda p, x: central_differences(net, p, x),
    }
    return {k: jax.jit(f) for k, f in fns.items() if with_central or k != "central"}


# ---------------------------------------------------------------------------------------
# Timing: compiled and warmed up, interleaved, medians.
# ---------------------------------------------------------------------------------------


def _seconds(f, args, number):
    start = time.perf_counter()
    for _ in range(number):
        out = f(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / number


def time_all(fns, args, reps, rng):
    """``reps`` samples of the seconds per call of every function (and its result). Each
    sample repeats the call for about ``SAMPLE_S``; each repetition runs every contender
    once, in a fresh random order, so that load changes hit all of them alike."""
    results = {name: jax.block_until_ready(f(*args)) for name, f in fns.items()}  # compile
    number = {
        name: max(1, round(SAMPLE_S / min(_seconds(f, args, 1) for _ in range(3))))
        for name, f in fns.items()
    }
    samples = {name: [] for name in fns}
    for _ in range(reps):
        for name in rng.sample(list(fns), len(fns)):
            samples[name].append(_seconds(fns[name], args, number[name]))
    return samples, results


def ratio(samples, a, b):
    """``t_a / t_b`` as the median of the per-repetition ratios: the two ran back to back in
    every repetition, so a load change that slows both cancels out."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def measure(sizes, hidden_act, dtype, reps, seed, rng, focus_reps=0):
    """Time and check every contender on the network ``sizes``; with ``focus_reps``, time
    the four AD contenders once more, that many repetitions, for the verdict's ratios."""
    net = fnn.MLP(sizes, (hidden_act,) * (len(sizes) - 2) + ("identity",))
    params = fnn.init(jax.random.key(seed), net, dtype=dtype)
    x = jax.random.normal(jax.random.key(seed + 1), (net.in_features,), dtype)
    fns = contenders(net, with_central=net.in_features <= CENTRAL_MAX_WIDTH)
    samples, results = time_all(fns, (params, x), reps, rng)
    reference = np.asarray(results["jacrev"], np.float64)
    scale = max(1.0, float(np.abs(reference).max()))
    errors = {
        k: float(np.abs(np.asarray(J, np.float64) - reference).max()) for k, J in results.items()
    }
    tol = TOLERANCE[jnp.dtype(dtype).name]
    ok = {k: e <= scale * tol["central" if k == "central" else "ad"] for k, e in errors.items()}
    macs = {m: cost_model.jacobian_macs(net, m) for m in cost_model.JACOBIAN_METHODS}
    focus = {k: fns[k] for k in FOCUS} if focus_reps else {}
    return {
        "sizes": list(sizes),
        "d_in": net.in_features,
        "d_out": net.out_features,
        "time_s": {name: statistics.median(t) for name, t in samples.items()},
        "samples_s": samples,
        "focus_samples_s": time_all(focus, (params, x), focus_reps, rng)[0],
        "max_abs_error": errors,
        "ok": ok,
        "macs": macs,
    }


# ---------------------------------------------------------------------------------------
# Reading the results: crossovers, headline ratios, table, figure, verdict.
# ---------------------------------------------------------------------------------------


def measured_crossover(rows, width_key):
    """Where ``t_fwd / t_rev`` (:func:`ratio`) crosses 1 along a sweep, interpolated on
    log-log axes; ``None`` if it does not cross inside the sweep."""
    points = [(r[width_key], math.log(ratio(r["samples_s"], "fwd", "rev"))) for r in rows]
    for (w0, r0), (w1, r1) in itertools.pairwise(points):
        if r0 == 0:
            return float(w0)
        if r0 * r1 < 0:
            t = r0 / (r0 - r1)
            return math.exp(math.log(w0) + t * (math.log(w1) - math.log(w0)))
    return None


def fmt_time(s):
    return f"{s * 1e6:8.1f}µs" if s < 1e-3 else f"{s * 1e3:8.2f}ms"


def arch(row):
    return "→".join(map(str, row["sizes"]))


def print_table(sweeps):
    head = " ".join(f"{c:>10}" for c in CONTENDERS)
    print(f"\n{'sweep':7} {'network':22} {head} {'rev/fwd':>8} {'max err':>9}")
    for sweep, rows in sweeps.items():
        for r in rows:
            t = r["time_s"]
            cells = " ".join(fmt_time(t[c]) if c in t else f"{'—':>10}" for c in CONTENDERS)
            err = max(e for k, e in r["max_abs_error"].items() if k != "central")
            flag = "" if all(r["ok"].values()) else " FAIL"
            rev_over_fwd = ratio(r["samples_s"], "rev", "fwd")
            print(f"{sweep:7} {arch(r):22} {cells} {rev_over_fwd:8.2f} {err:9.1e}{flag}")


def plot(sweeps, predicted, measured, fixed, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    styles = {"fwd": "o-", "rev": "s-", "jacfwd": "x--", "jacrev": "+--", "explicit": "^:"}
    for ax, (sweep, rows) in zip(axes, sweeps.items()):
        key = "d_out" if sweep == "output" else "d_in"
        widths = [r[key] for r in rows]
        for name, style in styles.items():
            ax.plot(widths, [r["time_s"][name] for r in rows], style, label=name)
        ax.axvline(predicted[sweep], color="gray", ls="--", label="predicted crossover")
        if measured[sweep] is not None:
            ax.axvline(measured[sweep], color="red", ls=":", label="measured crossover")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=f"{'output' if key == 'd_out' else 'input'} "
            f"width ({'input' if key == 'd_out' else 'output'} fixed at {fixed})",
        )
        ax.set_title(f"Jacobian, {sweep} width varied")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("median time per Jacobian [s]")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def spread(samples, a, b):
    """The interquartile range of the paired ratios ``t_a / t_b`` of :func:`ratio`: how far
    the same comparison moved from one repetition to the next in this run."""
    r = sorted(x / y for x, y in zip(samples[a], samples[b]))
    if len(r) < 2:
        return r[0], r[0]
    q = statistics.quantiles(r, n=4, method="inclusive")
    return q[0], q[2]


def target(text, value, iqr, goal, at_most, show=True):
    """`` (target ≤ 1.05×: met)`` for the figure the default sweep must reach; nothing if
    not shown. A median on the wrong side of the goal is *within the run's noise* when the
    goal lies inside the paired ratios' interquartile range ``iqr`` (another run may well
    meet it), and *missed* only when the whole range is on the wrong side."""
    if not show:
        return ""
    lo, hi = iqr
    if value <= goal if at_most else value >= goal:
        return f" (target {text}: met)"
    inside = lo <= goal if at_most else hi >= goal
    state = "within this run's noise" if inside else "missed"
    return f" (target {text}: {state}; paired ratios {lo:.2f}–{hi:.2f}×)"


def verdict(sweeps, predicted, measured, fixed, targets=True):
    """The headline ratios on the most lopsided shapes (from their focused timings, median
    of paired ratios), and the verdict in words."""
    wide_out, wide_in = sweeps["output"][-1], sweeps["input"][-1]
    t_out, t_in = wide_out["focus_samples_s"], wide_in["focus_samples_s"]
    rev_speedup, fwd_speedup = ratio(t_in, "fwd", "rev"), ratio(t_out, "rev", "fwd")
    hand_rev, hand_fwd = ratio(t_in, "rev", "jacrev"), ratio(t_out, "fwd", "jacfwd")
    h = {
        "wide_input_network": arch(wide_in),
        "reverse_speedup_on_wide_input": rev_speedup,
        "wide_output_network": arch(wide_out),
        "forward_speedup_on_wide_output": fwd_speedup,
        "hand_reverse_over_jacrev_on_wide_input": hand_rev,
        "hand_forward_over_jacfwd_on_wide_output": hand_fwd,
    }
    iqr = {
        "rev": spread(t_in, "fwd", "rev"),
        "fwd": spread(t_out, "rev", "fwd"),
        "jacrev": spread(t_in, "rev", "jacrev"),
        "jacfwd": spread(t_out, "fwd", "jacfwd"),
    }
    h["paired_ratio_iqr"] = iqr
    lines = [
        f"Reverse wins where the output is narrower than the input: on {arch(wide_in)} it is "
        f"{rev_speedup:.1f}× faster than forward"
        f"{target('≥ 10×', rev_speedup, iqr['rev'], 10, False, targets)}.",
        f"Forward wins where the output is wider than the input: on {arch(wide_out)} it is "
        f"{fwd_speedup:.1f}× faster than reverse"
        f"{target('≥ 10×', fwd_speedup, iqr['fwd'], 10, False, targets)}.",
        f"Hand-written vs JAX on the shape each suits: rev/jacrev = {hand_rev:.2f}×"
        f"{target('≤ 1.05×', hand_rev, iqr['jacrev'], 1.05, True, targets)}, "
        f"fwd/jacfwd = {hand_fwd:.2f}×"
        f"{target('≤ 1.05×', hand_fwd, iqr['jacfwd'], 1.05, True, targets)}.",
    ]
    for sweep, other in (("output", "input"), ("input", "output")):
        m, p = measured[sweep], predicted[sweep]
        where = (
            "outside the sweep" if m is None else f"≈ {m:.1f} ({max(m, p) / min(m, p):.2f}× off)"
        )
        lines.append(
            f"Crossover with the {other} width fixed at {fixed}, {sweep} width varied: predicted "
            f"at {p:.1f} (equal multiply-adds where M_out = D_in), measured {where}."
        )
    return h, lines


# ---------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------


def widths(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return values


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small networks, few repetitions")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--reps", type=positive_int, help="timing repetitions (median)")
    parser.add_argument("--sizes", type=widths, help="the varied widths, e.g. 1,10,100,784")
    parser.add_argument("--hidden", type=widths, help="hidden widths, e.g. 256,256")
    parser.add_argument("--fixed", type=positive_int, default=10, help="the fixed width")
    parser.add_argument("--activation", default="tanh", choices=fnn.activations.names())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key in ("hidden", "sizes", "reps"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    args.sizes = tuple(sorted(set(args.sizes)))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)
    rng = random.Random(args.seed)
    device = jax.devices()[0]
    print(
        f"fnn compare_modes: {device.platform} ({device.device_kind}), {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}, {args.dtype}, {args.reps} reps, hidden {args.hidden}"
    )
    print("Times are medians of interleaved runs; on a shared machine they are noisy.")

    start, cache = time.perf_counter(), {}
    sweeps = {"output": [], "input": []}
    for w in args.sizes:
        for sweep, sizes in (
            ("output", (args.fixed, *args.hidden, w)),
            ("input", (w, *args.hidden, args.fixed)),
        ):
            if sizes not in cache:
                focus_reps = FOCUS_FACTOR * args.reps if w == args.sizes[-1] else 0
                cache[sizes] = measure(
                    sizes, args.activation, dtype, args.reps, args.seed, rng, focus_reps
                )
            sweeps[sweep].append(cache[sizes])

    acts = (args.activation,) * len(args.hidden) + ("identity",)
    predicted = {s: cost_model.crossover(args.hidden, args.fixed, s, acts) for s in sweeps}
    measured = {
        s: measured_crossover(rows, "d_out" if s == "output" else "d_in")
        for s, rows in sweeps.items()
    }
    print_table(sweeps)
    # The targets are for the default sweep; a --quick run's small networks do not reach them.
    headline, lines = verdict(sweeps, predicted, measured, args.fixed, targets=not args.quick)
    all_ok = all(all(r["ok"].values()) for r in cache.values())
    lines.append(
        f"All {sum(len(r['ok']) for r in cache.values())} Jacobians checked against jax.jacrev: "
        + ("every one within tolerance." if all_ok else "SOME FAILED (marked FAIL above).")
    )
    print("\nVerdict:\n" + "\n".join(f"  - {line}" for line in lines))

    args.out.mkdir(parents=True, exist_ok=True)
    plot(sweeps, predicted, measured, args.fixed, args.out / "compare_modes.png")
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "platform": device.platform,
            "device": device.device_kind,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
        },
        "sweeps": sweeps,
        "crossover": {s: {"predicted": predicted[s], "measured": measured[s]} for s in sweeps},
        "headline": headline,
        "verdict": lines,
        "all_checks_passed": all_ok,
        "seconds": time.perf_counter() - start,
    }
    (args.out / "compare_modes.json").write_text(json.dumps(result, indent=2))
    print(
        f"\nWrote {args.out / 'compare_modes.json'} and {args.out / 'compare_modes.png'} "
        f"in {result['seconds']:.1f} s."
    )
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
