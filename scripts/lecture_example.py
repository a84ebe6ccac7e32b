"""The lecture's PyTorch backpropagation example, ported to fnn (S20).

The lecture builds x ∈ R¹⁰, three 10×10 layers with sigmoid, sigmoid, identity, the squared
error ``Loss = Σ (z − y)²`` and calls ``Loss.backward()``. Here the gradients come from the
hand-written backprop (``fnn.value_and_grad``, S17); each is printed like the lecture's
``x.grad``, ``W[k].grad``, ``b[k].grad``, next to its largest difference from ``jax.grad``
of the same loop. If PyTorch happens to be importable (it is not a dependency), the
lecture's own code runs on the same numbers and is compared too.

    python scripts/lecture_example.py                  # float32, like torch.randn
    python scripts/lecture_example.py --seed 3 --x64 --method explicit

Writes ``lecture_example.json`` and ``lecture_example.png`` (the three ∂L/∂W) under --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnn

F = (jax.nn.sigmoid, jax.nn.sigmoid, lambda a: a)  # f = [torch.sigmoid, torch.sigmoid, identity]


def make_example(seed: int, dtype):
    """x, y, every W[k] and b[k] drawn from N(0, 1), as the lecture's ``torch.randn``."""
    net = fnn.MLP((10, 10, 10, 10), ("sigmoid", "sigmoid", "identity"))
    k_params, k_b, k_x, k_y = jax.random.split(jax.random.key(seed), 4)
    params = fnn.init(k_params, net, scheme="normal", dtype=dtype)  # W[k] = torch.randn(10, 10)
    for layer, k in zip(params, jax.random.split(k_b, net.num_layers)):
        layer["b"] = jax.random.normal(k, (10,), dtype)  # b[k] = torch.randn(10, 1)
    x = jax.random.normal(k_x, (10,), dtype)
    y = jax.random.normal(k_y, (10,), dtype)
    return net, params, x, y


def lecture_loss(W, b, x, y):
    """The lecture's loop, line by line: the witness that ``jax.grad`` differentiates."""
    z = [x]
    for k in range(3):
        a = W[k] @ z[-1] + b[k]
        z.append(F[k](a))
    return jnp.sum((z[-1] - y) ** 2)


def torch_gradients(W, b, x, y):
    """The lecture's PyTorch code on the same numbers, or None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    xt = torch.tensor(np.asarray(x)[:, None], requires_grad=True)
    yt = torch.tensor(np.asarray(y)[:, None])
    Wt = [torch.tensor(np.asarray(w), requires_grad=True) for w in W]
    bt = [torch.tensor(np.asarray(v)[:, None], requires_grad=True) for v in b]
    f = [torch.sigmoid, torch.sigmoid, lambda a: a]
    z = [xt]
    for k in range(3):
        z.append(f[k](torch.matmul(Wt[k], z[-1]) + bt[k]))
    torch.sum((z[-1] - yt) ** 2).backward()
    return {
        "x": xt.grad.numpy()[:, 0],
        **{f"W[{k}]": Wt[k].grad.numpy() for k in range(3)},
        **{f"b[{k}]": bt[k].grad.numpy()[:, 0] for k in range(3)},
    }


def named(grad_x, W_grads, b_grads):
    """The gradients under the lecture's names: x, W[0], b[0], …"""
    out = {"x": np.asarray(grad_x)}
    for k, (gW, gb) in enumerate(zip(W_grads, b_grads)):
        out[f"W[{k}]"], out[f"b[{k}]"] = np.asarray(gW), np.asarray(gb)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="reverse", choices=["reverse", "explicit"])
    parser.add_argument("--x64", action="store_true", help="float64 instead of float32")
    parser.add_argument("--quick", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    args = parser.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.x64 else jnp.float32

    net, params, x, y = make_example(args.seed, dtype)
    loss, grads = fnn.value_and_grad(net, params, x, y, loss="l2", method=args.method)
    ours = named(grads["x"], [g["W"] for g in grads["params"]], [g["b"] for g in grads["params"]])
    W, b = [p["W"] for p in params], [p["b"] for p in params]
    jax_loss, (gW, gb, gx) = jax.value_and_grad(lecture_loss, argnums=(0, 1, 2))(W, b, x, y)
    witness = named(gx, gW, gb)
    torch_grads = None if args.quick else torch_gradients(W, b, x, y)

    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    print(f"Loss = {float(loss):.6g}   (jax: {float(jax_loss):.6g}), {jnp.dtype(dtype).name}")
    print(f"x.grad = {ours['x']}")
    for k in range(3):
        print(f"Layer {k}:")
        print(f"W[{k}].grad = {ours[f'W[{k}]']}")
        print(f"b[{k}].grad = {ours[f'b[{k}]']}")

    diffs = {name: float(np.max(np.abs(ours[name] - witness[name]))) for name in ours}
    torch_diffs = (
        None
        if torch_grads is None
        else {name: float(np.max(np.abs(ours[name] - torch_grads[name]))) for name in ours}
    )
    print(f"\nfnn ({args.method}) against the witnesses: largest |difference|")
    print(f"{'tensor':8}{'shape':>10}{'jax.grad':>12}{'PyTorch':>12}")
    for name, diff in diffs.items():
        t = "—" if torch_diffs is None else f"{torch_diffs[name]:.2e}"
        print(f"{name:8}{ours[name].shape!s:>10}{diff:12.2e}{t:>12}")
    print(f"largest difference from jax.grad: {max(diffs.values()):.2e}")

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "seed": args.seed,
        "method": args.method,
        "dtype": jnp.dtype(dtype).name,
        "loss": float(loss),
        "grads": {name: g.tolist() for name, g in ours.items()},
        "max_abs_diff_jax": diffs,
        "max_abs_diff_torch": torch_diffs,
    }
    (args.out / "lecture_example.json").write_text(json.dumps(result, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for k, ax in enumerate(axes):
        g = ours[f"W[{k}]"]
        lim = float(np.max(np.abs(g))) or 1.0
        im = ax.imshow(g, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"∂L/∂W[{k}]  (f = {net.activations[k]})")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"Lecture example (S20), seed {args.seed}: L = {float(loss):.4g}")
    fig.tight_layout()
    fig.savefig(args.out / "lecture_example.png", dpi=100)
    plt.close(fig)
    print(f"wrote {args.out / 'lecture_example.json'} and {args.out / 'lecture_example.png'}")
    return result


if __name__ == "__main__":
    main()
