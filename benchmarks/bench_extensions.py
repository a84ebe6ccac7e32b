"""Per-example quantities from one backward pass against the batch gradient and jax.vmap(jax.grad)
(S24, S25).

All contenders are jitted, warmed up and timed side by side in one run (``timing.py``: every
repetition runs every contender once, alternating the order; each figure is the median of the
paired per-repetition ratios, ± half their interquartile range). Rows and goals:

  per_example_grad_norms ÷ fnn.value_and_grad        ≤ 0.8  (δ's and z's, no Δᵀ Z)
  jax.vmap(jax.grad) + norms ÷ fnn.value_and_grad           (beside it, for scale)
  clipped_grad ÷ fnn.value_and_grad                  ≤ 1.2
  clipped_grad ÷ jax.value_and_grad (params only)           (a stricter denominator)
  per_example_grads ÷ jax.vmap(jax.grad)             ≤ 0.7
  B·P zeros ÷ jax.vmap(jax.grad)                            (the floor: writing the output)
  gradient_statistics ÷ fnn.value_and_grad                  (S25, for scale)

``fnn.value_and_grad`` returns the gradient w.r.t. the parameters AND x (as bench_reverse
times it); ``jax.value_and_grad (params only)`` does less work. With torch, BackPACK and
Opacus importable (an optional comparison, never a dependency; not installed here), the same
weights are also run there and fnn's results compared and timed in blocks; otherwise those
rows are skipped with the reason.

    python benchmarks/bench_extensions.py              # 784-512-512-10, batch 256, float32
    python benchmarks/bench_extensions.py --quick      # seconds: 64-32-32-4, batch 16
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_reverse  # noqa: E402
import fnn  # noqa: E402
import timing  # noqa: E402

FULL = {"sizes": (784, 512, 512, 10), "batch": 256, "reps": 11}
QUICK = {"sizes": (64, 32, 32, 4), "batch": 16, "reps": 3}
TORCH_ROWS = (
    "per_example_grad_norms ÷ BackPACK BatchL2Grad",
    "per_example_grads ÷ BackPACK BatchGrad",
    "clipped_grad ÷ Opacus GradSampleModule + clipping",
)


def contenders(net, loss="l2", max_norm=1.0):
    """The jitted functions ``(params, x, y) -> …`` timed against each other."""
    loss_fn = fnn.losses.get(loss).fn

    def example_loss(p, x, y):
        return loss_fn(fnn.apply(net, p, x), y)

    def batch_loss(p, x, y):
        return jnp.mean(jax.vmap(loss_fn)(fnn.apply(net, p, x), y))

    vmap_grad = jax.vmap(jax.grad(example_loss), (None, 0, 0))
    P = fnn.summary(net).num_params
    return {
        "fnn.value_and_grad": lambda p, x, y: fnn.value_and_grad(net, p, x, y, loss=loss),
        "jax.value_and_grad (params only)": jax.value_and_grad(batch_loss),
        "per_example_grad_norms": lambda p, x, y: fnn.per_example_grad_norms(
            net, p, x, y, loss=loss
        ),
        "jax.vmap(jax.grad) + norms": lambda p, x, y: jax.vmap(optax.tree.norm)(vmap_grad(p, x, y)),
        "clipped_grad": lambda p, x, y: fnn.clipped_grad(
            net, p, x, y, loss=loss, max_norm=max_norm
        ),
        "per_example_grads": lambda p, x, y: fnn.per_example_grads(net, p, x, y, loss=loss),
        "jax.vmap(jax.grad)": vmap_grad,
        "B·P zeros": lambda p, x, y: jnp.zeros((x.shape[0], P), x.dtype),
        "gradient_statistics": lambda p, x, y: fnn.gradient_statistics(net, p, x, y, loss=loss),
    }


RATIOS = [  # (numerator, denominator, goal)
    ("per_example_grad_norms", "fnn.value_and_grad", 0.8),
    ("jax.vmap(jax.grad) + norms", "fnn.value_and_grad", None),
    ("clipped_grad", "fnn.value_and_grad", 1.2),
    ("clipped_grad", "jax.value_and_grad (params only)", None),
    ("per_example_grads", "jax.vmap(jax.grad)", 0.7),
    ("B·P zeros", "jax.vmap(jax.grad)", None),
    ("gradient_statistics", "fnn.value_and_grad", None),
]


def torch_rows(net, params, x, y, max_norm, reps):
    """fnn against BackPACK and Opacus on the same weights (l2 loss, relu/tanh hidden layers):
    the largest relative difference and fnn's time ÷ theirs, each timed in its own block.
    Skipped, with the reason, when torch, backpack or opacus cannot be imported (as here:
    this path has not been run in fnn's own environment)."""
    try:
        import torch
        from backpack import backpack, extend
        from backpack.extensions import BatchGrad, BatchL2Grad
        from opacus import GradSampleModule
    except ImportError as error:
        return [{"name": n, "value": None, "detail": f"skipped: {error}"} for n in TORCH_ROWS]

    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "identity": torch.nn.Identity}

    def model():
        layers = []
        for p, f in zip(params, net.activations):
            linear = torch.nn.Linear(p["W"].shape[1], p["W"].shape[0])
            linear.weight.data = torch.tensor(np.asarray(p["W"]))
            linear.bias.data = torch.tensor(np.asarray(p["b"]))
            layers += [linear, acts[f]()]
        return torch.nn.Sequential(*layers)

    xt, yt = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y))
    B = x.shape[0]
    bp_model, bp_loss = extend(model()), extend(torch.nn.MSELoss(reduction="sum"))  # Σ_b L_b

    def backpack_run(extension):
        bp_model.zero_grad()
        with backpack(extension()):
            bp_loss(bp_model(xt), yt).backward()
        return [
            getattr(p, "batch_l2" if extension is BatchL2Grad else "grad_batch")
            for p in bp_model.parameters()
        ]

    gsm = GradSampleModule(model(), loss_reduction="sum")

    def opacus_run():  # Opacus's DPOptimizer clipping: C / (‖g_b‖ + 1e-6), at most 1
        gsm.zero_grad()
        torch.nn.functional.mse_loss(gsm(xt), yt, reduction="sum").backward()
        samples = [p.grad_sample for p in gsm.parameters()]
        norms = torch.stack([g.reshape(B, -1).norm(2, dim=1) for g in samples]).norm(2, dim=0)
        factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        return [torch.einsum("i,i...", factor, g) / B for g in samples]

    def flat(tensors):  # one vector, in torch's order: weight, bias, layer by layer
        return np.concatenate(
            [np.asarray(t.detach() if hasattr(t, "detach") else t).ravel() for t in tensors]
        )

    fns = contenders(net, "l2", max_norm)
    keys = ("per_example_grad_norms", "per_example_grads", "clipped_grad")
    ours = {k: jax.jit(fns[k]) for k in keys}
    theirs = {
        "per_example_grad_norms": lambda: [sum(backpack_run(BatchL2Grad)).sqrt()],
        "per_example_grads": lambda: backpack_run(BatchGrad),
        "clipped_grad": opacus_run,
    }
    rows = []
    for name, key in zip(TORCH_ROWS, keys):
        out = ours[key](params, x, y)
        grads = out if key == "per_example_grad_norms" else out[1]
        mine = flat(
            [grads]
            if key == "per_example_grad_norms"
            else [g for p in grads for g in (p["W"], p["b"])]
        )
        ref = flat(theirs[key]())
        diff = float(np.max(np.abs(mine - ref)) / np.max(np.abs(ref)))
        t = timing.blocks(
            {"fnn": ours[key], "torch": lambda *_, k=key: theirs[k]()}, (params, x, y), reps
        )
        rows.append(
            {
                "name": name,
                "value": timing.ratio(t, "fnn", "torch"),
                "goal": 1.0,
                "ok": timing.ratio(t, "fnn", "torch") <= 1.0,
                "detail": f"largest relative difference {diff:.1e}",
            }
        )
    return rows


def measure(sizes, batch, reps, hidden="relu", seed=0, max_norm=1.0):
    net, params, x, y = bench_reverse.setup(tuple(sizes), batch, hidden, jnp.float32, seed)
    fns = {name: jax.jit(f) for name, f in contenders(net, "l2", max_norm).items()}
    samples = timing.interleaved(fns, (params, x, y), reps, sample_s=0.05)
    rows = []
    for a, b, goal in RATIOS:
        r = timing.ratio(samples, a, b)
        ok = None if goal is None else bool(r <= goal)
        rows.append(
            {
                "name": f"{a} ÷ {b}",
                "value": r,
                "goal": goal,
                "ok": ok,
                "spread": timing.spread(samples, a, b),
            }
        )
    rows += torch_rows(net, params, x, y, max_norm, reps)
    ms = {name: 1e3 * timing.median(s) for name, s in samples.items()}
    return {
        "sizes": list(sizes),
        "batch": batch,
        "hidden": hidden,
        "dtype": "float32",
        "reps": reps,
        "backend": jax.default_backend(),
        "ms": ms,
        "rows": rows,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--reps", type=int, help="paired repetitions (default 11; quick 3)")
    parser.add_argument("--hidden", default="relu", help="hidden activation")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    reps = args.reps or config["reps"]

    r = measure(config["sizes"], config["batch"], reps, args.hidden)
    print(
        f"{'-'.join(map(str, r['sizes']))}, batch {r['batch']}, {r['hidden']}, float32, "
        f"{r['backend']}, {platform.processor() or platform.machine()}: median of {reps} "
        f"paired repetitions"
    )
    for name, ms in r["ms"].items():
        print(f"  {name:36}{ms:10.2f} ms")
    print(f"\n{'ratio':58}{'value':>8}{'± ':>6}{'goal':>7}")
    for row in r["rows"]:
        if row["value"] is None:
            print(f"{row['name']:58}{'—':>8}        {row['detail']}")
            continue
        goal = "" if row.get("goal") is None else f"≤ {row['goal']}"
        mark = {True: " ✓", False: " ✗", None: ""}[row.get("ok")]
        spread = f"{row['spread']:.2f}" if "spread" in row else ""
        print(
            f"{row['name']:58}{row['value']:8.2f}{spread:>6}{goal:>7}{mark} {row.get('detail', '')}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_extensions.json").write_text(json.dumps(r, indent=1))
    print(f"Wrote {args.out / 'bench_extensions.json'}")
    return r


if __name__ == "__main__":
    main()
