"""Every activation of the zoo and its hand-written derivative, one small panel each (S6, S7).

Writes ``activations.png`` and ``activations.json`` to ``--out`` (default ``results/``) and
prints a table: f and f′ at −2, 0, 2 (f′(0) is the documented kink convention for the
ReLUs), the largest gap between the hand-written f′ and ``jax.grad`` of f on the plotted
grid, and whether f and f′ stay finite at a = ±1e4 in float32.

Softmax is not elementwise; its panel shows softmax([a, 0])₁ (which is σ(a)) and the
diagonal entry s₁(1 − s₁) of its Jacobian.

    python scripts/plot_activations.py [--out DIR] [--points N] [--quick]
"""

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fnn import activations

jax.config.update("jax_enable_x64", True)


def curves(name):
    """``f`` and the hand-written ``f′`` of one activation as functions of a scalar-wise ``a``;
    softmax is drawn along its first input, with the second held at 0."""
    act = activations.get(name)
    p = dict(act.params)  # Python floats: weakly typed, they keep the dtype of `a`
    if act.elementwise:
        return (lambda a: act.fn(a, **p)), (lambda a: act.derivative(a, **p))

    def pair(a):
        return jnp.stack([a, jnp.zeros_like(a)], axis=-1)

    return (lambda a: act.fn(pair(a))[..., 0]), (lambda a: act.derivative(pair(a))[..., 0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    parser.add_argument("--points", type=int, default=800, help="grid points on [−4, 4]")
    parser.add_argument("--quick", action="store_true", help="a coarse grid and a small PNG")
    args = parser.parse_args(argv)
    points = 200 if args.quick else args.points
    args.out.mkdir(parents=True, exist_ok=True)

    # An even number of points on [−4, 4] steps over the kinks at 0 and ±1.
    a = jnp.linspace(-4.0, 4.0, 2 * (points // 2))
    extremes = jnp.asarray([-1e4, 1e4], jnp.float32)
    names = activations.names()
    fig, axes = plt.subplots(2, 7, figsize=(17, 5.2), sharex=True)
    rows = []
    print(f"{'activation':<11} {'f(-2)':>9} {'f(0)':>9} {'f(2)':>9} {'f′(-2)':>9} "
          f"{'f′(0)':>9} {'f′(2)':>9} {'|f′-grad|':>10} {'finite@1e4':>10}")  # fmt: skip
    for ax, name in zip(axes.flat, names):
        f, df = curves(name)
        # One compiled program per activation and dtype: the grid, −2, 0, 2, and jax.grad.
        evaluate = jax.jit(lambda a, f=f, df=df: (f(a), df(a), jax.vmap(jax.grad(f))(a)))
        z, dz, by_jax = evaluate(jnp.concatenate([a, jnp.asarray([-2.0, 0.0, 2.0])]))
        z, dz, by_jax, f_at, df_at = z[:-3], dz[:-3], by_jax[:-3], z[-3:], dz[-3:]
        z_far, dz_far, _ = evaluate(extremes)
        finite = bool(jnp.all(jnp.isfinite(z_far)) and jnp.all(jnp.isfinite(dz_far)))
        row = {
            "name": name,
            "f": [float(v) for v in f_at],
            "derivative": [float(v) for v in df_at],
            "at": [-2.0, 0.0, 2.0],
            "max_abs_error_vs_jax_grad": float(jnp.max(jnp.abs(dz - by_jax))),
            "finite_at_1e4_float32": finite,
        }
        rows.append(row)
        print(f"{name:<11} " + " ".join(f"{v:9.4f}" for v in row["f"] + row["derivative"])
              + f" {row['max_abs_error_vs_jax_grad']:10.1e} {finite!s:>10}")  # fmt: skip

        ax.axhline(0, color="0.85", lw=0.8)
        ax.axvline(0, color="0.85", lw=0.8)
        ax.plot(a, z, color="C0", lw=1.8, label="f(a)")
        ax.plot(a, dz, color="C3", lw=1.3, ls="--", label="f′(a)")
        ax.set_title(name if name != "softmax" else "softmax([a, 0])₁", fontsize=10)
        ax.set_ylim(-1.6, 4.1)
        ax.tick_params(labelsize=8)
    axes.flat[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Activations f (solid) and their hand-written derivatives f′ (dashed)")
    fig.tight_layout()
    png = args.out / "activations.png"
    fig.savefig(png, dpi=60 if args.quick else 120)
    plt.close(fig)
    (args.out / "activations.json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {png} and {args.out / 'activations.json'}")
    return rows


if __name__ == "__main__":
    main()
