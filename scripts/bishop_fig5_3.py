"""Bishop (2006) Fig. 5.3: a 1-3-1 tanh network approximates x², sin(x), |x| and H(x) (S10).

For each function, N = 50 points drawn uniformly in (−1, 1) train a two-layer network with 3
tanh hidden units and a linear output (l2 loss = mean squared error), by full-batch Adam
with a cosine-decayed step size on fnn's hand-written gradients (``fnn.training.train_step``).
All restarts of one function train at once (``jax.vmap`` over the initialisations inside one
compiled ``lax.scan``); the restart with the lowest final MSE is drawn.

Writes ``bishop_fig5_3.png`` and ``bishop_fig5_3.json`` to ``--out`` (default ``results/``):
data (blue dots), the network's fit (red), and the three hidden units' contributions
``w⁽²⁾ⱼ tanh(w⁽¹⁾ⱼ x + b⁽¹⁾ⱼ)`` (dashed), which add up to the fit minus the output bias.

    python scripts/bishop_fig5_3.py [--steps 3000] [--restarts 8] [--lr 0.05] [--quick]
"""

import argparse
import functools
import json
import operator
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import fnn
from fnn import training

NET = fnn.MLP((1, 3, 1), ("tanh", "identity"))
FUNCTIONS = {
    "x²": lambda x: x**2,
    "sin(x)": jnp.sin,
    "|x|": jnp.abs,
    "H(x)": lambda x: jnp.where(x > 0, 1.0, 0.0),
}


@functools.partial(jax.jit, static_argnames=("steps", "lr"))
def train(keys, x, y, *, steps, lr):
    """Train one network per key on ``(x, y)`` by full-batch Adam; return the parameters and
    the loss curve of each (shapes ``(R, …)`` and ``(R, steps)``). Compiled once: the four
    data sets have the same shapes."""
    optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.01))

    def one_run(key):
        params = fnn.init(key, NET, scale=2.0)

        def step(carry, _):
            params, state = carry
            params, state, L = training.train_step(NET, params, x, y, optimizer, state)
            return (params, state), L

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
        return params, losses

    return jax.vmap(one_run)(keys)


def mean_squared_error(params, x, y):
    return jnp.mean((fnn.apply(NET, params, x) - y) ** 2)


def hidden_contributions(params, x):
    """``w⁽²⁾ⱼ zⱼ(x)`` for the 3 hidden units, shape ``(len(x), 3)``."""
    z = jnp.tanh(x @ params[0]["W"].T + params[0]["b"])
    return z * params[1]["W"][0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="data points per function")
    parser.add_argument("--steps", type=int, default=3000, help="full-batch Adam steps")
    parser.add_argument("--restarts", type=int, default=8, help="initialisations per function")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam's initial step size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    parser.add_argument("--quick", action="store_true", help="few steps and restarts (tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.restarts = 200, 2
    args.out.mkdir(parents=True, exist_ok=True)

    data_key, init_key = jax.random.split(jax.random.key(args.seed))
    grid = jnp.linspace(-1, 1, 201)[:, None]
    fig, axes = plt.subplots(2, 2, figsize=(8, 6.6), sharex=True)
    results = {}
    print(f"{'f(x)':<8} {'MSE (best)':>11} {'MSE (worst)':>12}  restarts  steps")
    for (name, f), ax, key in zip(FUNCTIONS.items(), axes.flat, jax.random.split(data_key, 4)):
        x = jax.random.uniform(key, (args.n, 1), minval=-1.0, maxval=1.0)
        y = f(x)
        params, _ = train(
            jax.random.split(init_key, args.restarts), x, y, steps=args.steps, lr=args.lr
        )
        mse = jax.vmap(mean_squared_error, in_axes=(0, None, None))(params, x, y)
        best = int(jnp.argmin(mse))
        p = jax.tree.map(operator.itemgetter(best), params)
        results[name] = {
            "mse": float(mse[best]),
            "mse_all_restarts": [float(m) for m in mse],
            "params": jax.tree.map(lambda leaf: leaf.tolist(), p),
        }
        print(
            f"{name:<8} {mse[best]:11.2e} {jnp.max(mse):12.2e}  {args.restarts:8d}  {args.steps:5d}"
        )

        ax.plot(grid[:, 0], hidden_contributions(p, grid), ls="--", lw=1.0)
        ax.plot(grid[:, 0], fnn.apply(NET, p, grid)[:, 0], color="C3", lw=2, label="network")
        ax.plot(x[:, 0], y[:, 0], "o", color="C0", ms=4, label="data")
        ax.set_title(f"f(x) = {name}    MSE = {mse[best]:.1e}", fontsize=10)
        ax.set_xlim(-1, 1)
    axes.flat[0].legend(fontsize=8, loc="upper center")
    fig.suptitle(
        f"Bishop Fig. 5.3: 1-3-1 tanh network, N = {args.n}; dashed: hidden unit j's "
        "contribution w⁽²⁾ⱼ·tanh(w⁽¹⁾ⱼx + b⁽¹⁾ⱼ)",
        fontsize=9,
    )
    fig.tight_layout()
    png = args.out / "bishop_fig5_3.png"
    fig.savefig(png, dpi=60 if args.quick else 120)
    plt.close(fig)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    (args.out / "bishop_fig5_3.json").write_text(
        json.dumps({"settings": settings, "functions": results}, indent=2, ensure_ascii=False)
    )
    print(f"wrote {png} and {args.out / 'bishop_fig5_3.json'}")
    return results


if __name__ == "__main__":
    main()
