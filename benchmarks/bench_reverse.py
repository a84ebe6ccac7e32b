"""The reverse engine against ``jax.value_and_grad`` on the same network (S17, S22).

Both sides compute the batch-mean loss and its gradient w.r.t. every parameter AND the
input x, under ``jax.jit``, warmed up; the repetitions interleave the two (alternating
which one goes first) and each side's figure is the median over ``--reps`` samples of
``--number`` calls. A ratio ≤ 1 means the hand-written backprop is as fast as JAX's.

    python benchmarks/bench_reverse.py                 # 784-512-512-10, batch 256, float32
    python benchmarks/bench_reverse.py --reps 31 --number 20

Importable: ``measure(...)`` returns the figures as a dict, for a benchmark suite.
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp

import fnn
import timing  # benchmarks/timing.py, beside this script


def setup(sizes, batch, hidden, dtype, seed):
    """The network (hidden layers ``hidden``, linear output), its parameters and data."""
    net = fnn.MLP(sizes, (hidden,) * (len(sizes) - 2) + ("identity",))
    key_params, key_x, key_y = jax.random.split(jax.random.key(seed), 3)
    params = fnn.init(key_params, net, dtype=dtype)
    x = jax.random.normal(key_x, (batch, sizes[0]), dtype)
    y = jax.random.normal(key_y, (batch, sizes[-1]), dtype)
    return net, params, x, y


def candidates(net, loss="l2"):
    """The two jitted functions ``(params, x, y) -> (loss, grads)`` to compare."""
    loss_fn = fnn.losses.get(loss).fn

    def batch_loss(params, x, y):
        return jnp.mean(jax.vmap(loss_fn)(fnn.apply(net, params, x), y))

    return {
        "fnn reverse": jax.jit(lambda p, x, y: fnn.value_and_grad(net, p, x, y, loss=loss)),
        "jax.value_and_grad": jax.jit(jax.value_and_grad(batch_loss, argnums=(0, 1))),
    }


def measure(
    sizes=(784, 512, 512, 10),
    batch=256,
    hidden="relu",
    loss="l2",
    dtype="float32",
    reps=15,
    number=10,
    seed=0,
):
    """Median seconds per call of both sides and their ratio (fnn / jax).

    Returns:
      ``{"sizes", "batch", "hidden", "loss", "dtype", "reps", "number", "backend",
      "fnn_s", "jax_s", "ratio", "samples": {name: [seconds, …]}}``.
    """
    net, params, x, y = setup(tuple(sizes), batch, hidden, jnp.dtype(dtype), seed)
    fns = candidates(net, loss)
    for fn in fns.values():  # compile and warm up
        for _ in range(3):
            jax.block_until_ready(fn(params, x, y))
    samples = {name: [] for name in fns}
    for rep in range(reps):
        order = list(fns) if rep % 2 == 0 else list(fns)[::-1]
        for name in order:
            samples[name].append(timing.seconds_per_call(fns[name], (params, x, y), number))
    fnn_s = statistics.median(samples["fnn reverse"])
    jax_s = statistics.median(samples["jax.value_and_grad"])
    return {
        "sizes": list(sizes),
        "batch": batch,
        "hidden": hidden,
        "loss": loss,
        "dtype": str(jnp.dtype(dtype)),
        "reps": reps,
        "number": number,
        "backend": jax.default_backend(),
        "fnn_s": fnn_s,
        "jax_s": jax_s,
        "ratio": fnn_s / jax_s,
        "samples": samples,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[784, 512, 512, 10])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="relu", help="hidden activation")
    parser.add_argument("--loss", default="l2")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--reps", type=int, default=15, help="interleaved samples (≥ 15)")
    parser.add_argument("--number", type=int, default=10, help="calls per sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)

    r = measure(
        args.sizes,
        args.batch,
        args.hidden,
        args.loss,
        args.dtype,
        args.reps,
        args.number,
        args.seed,
    )
    arch = "-".join(map(str, r["sizes"]))
    print(
        f"{arch}, batch {r['batch']}, {r['hidden']}, {r['loss']}, {r['dtype']}, "
        f"{r['backend']}: median of {r['reps']} × {r['number']} calls"
    )
    print(f"{'':22}{'ms/call':>10}")
    print(f"{'fnn reverse':22}{1e3 * r['fnn_s']:10.3f}")
    print(f"{'jax.value_and_grad':22}{1e3 * r['jax_s']:10.3f}")
    print(f"ratio fnn / jax = {r['ratio']:.3f}")
    return r


if __name__ == "__main__":
    main()
