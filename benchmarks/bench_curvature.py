"""Hessian-vector products: fnn's hand R-operator against JAX, beside the gradient (S27, S28).

On 784-512-512-10, batch 256, float32 (the defaults), jit-compiled and warmed up, all
contenders interleaved in one run (benchmarks/timing.py), medians of paired ratios:

  fnn hvp              fnn.hvp, the R-operator by hand: one forward, one backward pass
  jax hvp              jax.jvp(jax.grad(L)): JAX's forward-over-reverse
  fnn gradient         fnn.value_and_grad (w.r.t. the parameters and x)
  jax gradient         jax.value_and_grad of the same loss (w.r.t. the parameters and x)

and reports fnn hvp ÷ jax hvp (goal ≤ 1.00) and HVP ÷ gradient on each side (goal: fnn's ≤
JAX's). ``--diagonals`` also times fnn.hessian_diagonal and fnn.ggn_diagonal (Hessian
backpropagation, dense ∂²L/∂a² per example: seconds, not milliseconds). The rows against
BackPACK's DiagHessian / DiagGGNExact run only where ``torch`` and ``backpack`` import
(an optional extra, float64, timed in blocks); otherwise they are reported as skipped.

    python benchmarks/bench_curvature.py
    python benchmarks/bench_curvature.py --hidden relu --reps 41 --diagonals

Importable: ``measure(...)`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import fnn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported from elsewhere
import timing  # benchmarks/timing.py, beside this script

NAMES = ("fnn hvp", "jax hvp", "fnn gradient", "jax gradient")


def setup(sizes, batch, hidden, dtype, seed):
    net = fnn.MLP(sizes, (hidden,) * (len(sizes) - 2) + ("identity",))
    k = jax.random.split(jax.random.key(seed), 4)
    params, v = fnn.init(k[0], net, dtype=dtype), fnn.init(k[1], net, dtype=dtype)
    x = jax.random.normal(k[2], (batch, sizes[0]), dtype)
    y = jax.random.normal(k[3], (batch, sizes[-1]), dtype)
    return net, params, v, x, y


def candidates(net, loss="l2"):
    """The four jitted functions ``(params, x, y, v) -> …`` compared."""
    loss_fn = fnn.losses.get(loss).fn

    def batch_loss(params, x, y):
        return jnp.mean(jax.vmap(loss_fn)(fnn.apply(net, params, x), y))

    jax_grad = jax.value_and_grad(batch_loss, argnums=(0, 1))
    return {
        "fnn hvp": jax.jit(lambda p, x, y, v: fnn.hvp(net, p, x, y, v, loss=loss)),
        "jax hvp": jax.jit(
            lambda p, x, y, v: jax.jvp(lambda q: jax.grad(batch_loss)(q, x, y), (p,), (v,))[1]
        ),
        "fnn gradient": jax.jit(lambda p, x, y, v: fnn.value_and_grad(net, p, x, y, loss=loss)),
        "jax gradient": jax.jit(lambda p, x, y, v: jax_grad(p, x, y)),
    }


def backpack_available() -> str | None:
    """``None`` if torch and backpack import, else why not (the row's detail)."""
    missing = [m for m in ("torch", "backpack") if importlib.util.find_spec(m) is None]
    return f"skipped: {' and '.join(missing)} not installed (optional extra)" if missing else None


def diagonals(net, params, x, y, loss="l2", reps=3):
    """Seconds per call (median of ``reps``) of hessian_diagonal and ggn_diagonal."""
    out = {}
    for name, f in (("hessian_diagonal", fnn.hessian_diagonal), ("ggn_diagonal", fnn.ggn_diagonal)):
        fn = jax.jit(lambda p, x, y, f=f: f(net, p, x, y, loss=loss))
        jax.block_until_ready(fn(params, x, y))
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            jax.block_until_ready(fn(params, x, y))
            times.append(time.perf_counter() - start)
        out[name] = timing.median(times)
    return out


def measure(
    sizes=(784, 512, 512, 10),
    batch=256,
    hidden="tanh",
    loss="l2",
    dtype="float32",
    reps=21,
    sample_s=0.05,
    seed=0,
    with_diagonals=False,
):
    """Median seconds per call of the four contenders, their paired ratios, and the
    BackPACK rows' status.

    Returns:
      ``{"sizes", "batch", "hidden", "loss", "dtype", "reps", "backend", "seconds": {name:
      s}, "hvp_ratio", "hvp_ratio_spread", "fnn_hvp_over_gradient", "jax_hvp_over_gradient",
      "diagonals": {…} or None, "backpack": str, "samples"}``.
    """
    net, params, v, x, y = setup(tuple(sizes), batch, hidden, jnp.dtype(dtype), seed)
    fns = candidates(net, loss)
    args = (params, x, y, v)
    samples = timing.interleaved(fns, args, reps, sample_s)
    return {
        "sizes": list(sizes),
        "batch": batch,
        "hidden": hidden,
        "loss": loss,
        "dtype": str(jnp.dtype(dtype)),
        "reps": reps,
        "backend": jax.default_backend(),
        "seconds": {name: timing.median(s) for name, s in samples.items()},
        "hvp_ratio": timing.ratio(samples, "fnn hvp", "jax hvp"),
        "hvp_ratio_spread": timing.spread(samples, "fnn hvp", "jax hvp"),
        "fnn_hvp_over_gradient": timing.ratio(samples, "fnn hvp", "fnn gradient"),
        "jax_hvp_over_gradient": timing.ratio(samples, "jax hvp", "jax gradient"),
        "diagonals": diagonals(net, params, x, y, loss) if with_diagonals else None,
        "backpack": backpack_available() or "available: see benchmarks/compare_backpack.py",
        "samples": samples,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[784, 512, 512, 10])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="tanh", help="hidden activation")
    parser.add_argument("--loss", default="l2")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--reps", type=int, default=21, help="interleaved samples")
    parser.add_argument("--sample-s", type=float, default=0.05, help="seconds per sample")
    parser.add_argument("--diagonals", action="store_true", help="also time the diagonals")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    r = measure(
        args.sizes, args.batch, args.hidden, args.loss, args.dtype, args.reps,
        args.sample_s, args.seed, args.diagonals,
    )  # fmt: skip
    arch = "-".join(map(str, r["sizes"]))
    print(
        f"{arch}, batch {r['batch']}, {r['hidden']}, {r['loss']}, {r['dtype']}, {r['backend']}: "
        f"median of {r['reps']} interleaved samples (shared machine: noisy)"
    )
    print(f"{'':16}{'ms/call':>10}")
    for name in NAMES:
        print(f"{name:16}{1e3 * r['seconds'][name]:10.3f}")
    print(f"fnn hvp ÷ jax hvp = {r['hvp_ratio']:.3f} (± {r['hvp_ratio_spread']:.3f})   goal ≤ 1.00")
    print(
        f"HVP ÷ gradient: fnn {r['fnn_hvp_over_gradient']:.2f}, jax "
        f"{r['jax_hvp_over_gradient']:.2f}   goal: fnn ≤ jax"
    )
    if r["diagonals"]:
        for name, s in r["diagonals"].items():
            print(f"{name:16}{1e3 * s:10.1f} ms (Hessian backpropagation, dense per example)")
    print(f"BackPACK DiagHessian / DiagGGNExact: {r['backpack']}")
    return r


if __name__ == "__main__":
    main()
