"""Device check: fnn's proofs and the speed of its structured gradient on this JAX backend (S22).

Run it once on any new machine (CPU, GPU or TPU; nothing in fnn changes between them):

1. prints the backend and its devices;
2. the core proofs, on the default device: the hand gradients (``fnn.value_and_grad``, every
   method) against ``jax.grad``, and the Jacobians (``fnn.jacobian``, forward and reverse)
   against ``jax.jacfwd``/``jax.jacrev``, in float32 (matmuls at full precision, so that
   TF32 does not blur the comparison) and float64 (not on TPU);
3. times the structured gradient (``method="reverse"``) of a wide network, float32 and
   bfloat16 where the device supports it, next to ``jax.value_and_grad`` of the same loss,
   and reports the achieved FLOP/s: one step costs ``6·B·Σᵢ Dᵢ·Mᵢ`` floating-point
   operations (forward ``2BDM``, backward ``4BDM`` per layer: ``∂L/∂W`` and ``∂L/∂z``).

Writes ``device_check.json`` to ``--out`` (default ``results/``).

    python scripts/device_check.py                 # widths 4096 and 8192, batch 4096
    python scripts/device_check.py --quick         # a few seconds on a CPU
"""

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnn

jax.config.update("jax_enable_x64", True)  # for the float64 proofs; every array below is typed

PROOF_NET = fnn.MLP((6, 8, 7, 4), ("tanh", "sigmoid", "identity"))
TOLERANCE = {"float32": 1e-5, "float64": 1e-11}  # relative to the largest entry


def rel_error(a, b) -> float:
    """The largest ``max |u − v| / max |v|`` over the leaves, in NumPy float64 (on the host:
    eager jnp calls here would each compile for their shape)."""
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    pairs = ((np.asarray(u, np.float64), np.asarray(v, np.float64)) for u, v in leaves)
    return max(float(np.max(np.abs(u - v)) / (np.max(np.abs(v)) + 1e-30)) for u, v in pairs)


def l2_loss(net, params, x, y):
    """The witness: the batch-mean l2 loss written with fnn.apply, for jax.grad."""
    return jnp.mean(jnp.sum((fnn.apply(net, params, x) - y) ** 2, axis=-1))


@jax.jit
def derivatives(params, x, y):
    """Every hand derivative next to its witness, in one compiled program (one compile per
    dtype instead of one per check: on a CPU the compiles are most of this script's time)."""
    net = PROOF_NET
    out = {"jax.grad": jax.value_and_grad(l2_loss, argnums=(1, 2))(net, params, x, y)}
    for method in fnn.training.METHODS:
        L, grads = fnn.value_and_grad(net, params, x, y, loss="l2", method=method)
        out[method] = L, (grads["params"], grads["x"])
    for mode, witness in (("forward", jax.jacfwd), ("reverse", jax.jacrev)):
        J_witness = witness(lambda x: fnn.apply(net, params, x))(x[0])
        out[f"jacobian[{mode}]"] = fnn.jacobian(net, params, x[0], method=mode), J_witness
    return out


def proofs(dtype, batch: int = 16) -> list[dict]:
    """Hand gradients and Jacobians vs JAX's own differentiation, one dtype. The numbers are
    drawn by NumPy on the host: every jax.random draw of a new shape compiles (seconds on a
    CPU), and any numbers will do for a proof."""
    net, rng = PROOF_NET, np.random.default_rng(0)
    params = [{k: rng.normal(0, 0.6, s) for k, s in layer.items()} for layer in net.layer_shapes()]
    x, y = rng.normal(size=(batch, net.in_features)), rng.normal(size=(batch, net.out_features))
    out = derivatives(*jax.tree.map(lambda a: jnp.asarray(a, dtype), (params, x, y)))
    rows = []
    for method in fnn.training.METHODS:
        err = rel_error(out[method], out["jax.grad"])
        rows.append({"check": f"value_and_grad[{method}] vs jax.grad", "error": err})
    for mode, witness in (("forward", "jacfwd"), ("reverse", "jacrev")):
        err = rel_error(*out[f"jacobian[{mode}]"])
        rows.append({"check": f"jacobian[{mode}] vs jax.{witness}", "error": err})
    name = jnp.dtype(dtype).name
    for row in rows:
        row.update(dtype=name, passed=row["error"] < TOLERANCE[name])
    return rows


def time_gradient(width: int, layers: int, batch: int, dtype, repeats: int) -> dict:
    """Median seconds of one structured gradient step, and of jax.value_and_grad's."""
    net = fnn.MLP((width,) * (layers + 1), ("tanh",) * (layers - 1) + ("identity",))
    k1, k2 = jax.random.split(jax.random.key(1))
    params = fnn.init(k1, net, dtype=dtype)
    x = jax.random.normal(k2, (batch, width), dtype)
    y = jnp.zeros((batch, width), dtype)
    flops = 6 * batch * sum(D * M for D, M in zip(net.sizes[:-1], net.sizes[1:]))
    candidates = {
        "fnn": jax.jit(lambda p, x: fnn.value_and_grad(net, p, x, y, loss="l2")),
        "jax": jax.jit(jax.value_and_grad(lambda p, x: l2_loss(net, p, x, y), argnums=(0, 1))),
    }
    seconds = {}
    for name, fn in candidates.items():
        jax.block_until_ready(fn(params, x))  # compile and warm up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(params, x))
            times.append(time.perf_counter() - start)
        seconds[name] = float(np.median(times))
    return {
        "width": width,
        "layers": layers,
        "batch": batch,
        "dtype": jnp.dtype(dtype).name,
        "flop_per_step": flops,
        "seconds_fnn": seconds["fnn"],
        "seconds_jax": seconds["jax"],
        "tflops_fnn": flops / seconds["fnn"] / 1e12,
        "tflops_jax": flops / seconds["jax"] / 1e12,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--layers", type=int, default=3, help="weight matrices, width × width")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    parser.add_argument("--quick", action="store_true", help="small widths, for a CPU (tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.widths, args.batch, args.repeats = [256], 128, 3
    args.out.mkdir(parents=True, exist_ok=True)

    backend = jax.default_backend()
    devices = [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]
    print(
        f"backend: {backend}   jax {jax.__version__}   devices ({len(devices)}): "
        + ", ".join(devices)
    )

    print("\nproofs (max relative error against JAX's own derivatives):")
    rows = []
    with jax.default_matmul_precision("highest"):
        for dtype in (jnp.float32, jnp.float64) if backend != "tpu" else (jnp.float32,):
            rows += proofs(dtype)
    for r in rows:
        print(
            f"  {r['check']:<42} {r['dtype']:<8} {r['error']:9.1e}  "
            f"{'ok' if r['passed'] else 'FAILED'}"
        )

    print(
        f"\nstructured gradient, {args.layers} layers width×width, batch {args.batch} "
        "(FLOP/s = 6·B·Σ D·M / time):"
    )
    print(
        f"  {'width':>6} {'dtype':<9} {'fnn ms':>9} {'fnn TFLOP/s':>12} {'jax ms':>9} "
        f"{'jax TFLOP/s':>12}"
    )
    timings = []
    for width in args.widths:
        for dtype in (jnp.float32, jnp.bfloat16):
            try:
                t = time_gradient(width, args.layers, args.batch, dtype, args.repeats)
            except Exception as err:  # a dtype the device does not support: say so, go on
                print(f"  {width:>6} {jnp.dtype(dtype).name:<9} skipped: {type(err).__name__}")
                continue
            timings.append(t)
            print(
                f"  {width:>6} {t['dtype']:<9} {1e3 * t['seconds_fnn']:9.2f} "
                f"{t['tflops_fnn']:12.3f} {1e3 * t['seconds_jax']:9.2f} {t['tflops_jax']:12.3f}"
            )

    result = {
        "backend": backend,
        "jax": jax.__version__,
        "devices": devices,
        "proofs": rows,
        "timings": timings,
        "settings": vars(args) | {"out": None},
    }
    (args.out / "device_check.json").write_text(json.dumps(result, indent=2))
    passed = all(r["passed"] for r in rows)
    print(
        f"\nproofs {'all passed' if passed else 'FAILED'}; wrote {args.out / 'device_check.json'}"
    )
    return result


if __name__ == "__main__":
    raise SystemExit(0 if all(r["passed"] for r in main()["proofs"]) else 1)
