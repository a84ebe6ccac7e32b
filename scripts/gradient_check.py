"""Gradient checks for every activation, loss and backprop method; the error of central
differences against ε; their cost (S11, S19).

For every activation (the hidden layer, L2 loss) and every loss (its output activation),
and every backprop method of ``fnn.value_and_grad``, the hand-written gradient w.r.t. all
parameters and the input is compared with central differences, entry by entry, in float64
and in float32, both against float64 central differences (:mod:`fnn.gradcheck`): the table
shows the relative error ``|a − b| / (|a| + |b|)`` of the worst entry (entries whose
``θ ± h`` crosses a kink are left out and counted). Then the V-curve — the
error of central differences for ε = 1e-1 … 1e-12 — and the cost: 2P loss evaluations
against one backward pass.

The networks are tiny (3 → 5 → 2): each (network, dtype) is a new program for XLA to
compile, and compiling is nearly all of the run time. One hidden layer runs every piece of
hand-written code a deeper one would (f′ or J_f, J_L, PReLU's ∂f/∂α, each engine's loop
over the layers); chains of several hidden layers are checked in ``tests/``.

  python scripts/gradient_check.py            # the whole zoo, 34 values of ε, 3 sizes
  python scripts/gradient_check.py --quick    # one method per case, 12 values of ε, 1 size
  python scripts/gradient_check.py --activations relu,gelu --losses l1

Writes ``results/gradient_check.json`` and ``results/fd_error_vs_eps.png`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import fnn
from fnn import gradcheck, numerical

jax.config.update("jax_enable_x64", True)

SIZES = (3, 5, 2)  # D → one hidden layer → M
COST_SIZES = ((8, 16, 4), (16, 64, 8), (24, 96, 12))  # P = 484, 5768, 12876
DTYPES = ("float64", "float32")
value_and_grad = jax.jit(fnn.value_and_grad, static_argnames=("loss", "method"))


@functools.partial(jax.jit, static_argnames=("loss", "methods"))
def hand_gradients(net, params, x, y, loss, methods):
    """The gradient of every method in ``methods``: one compiled program per network, loss
    and dtype instead of one per method (compiling is what this script spends its time on)."""
    return {m: fnn.value_and_grad(net, params, x, y, loss=loss, method=m)[1] for m in methods}


def output_activation(loss: fnn.losses.Loss) -> str:
    """The output a loss expects: logits or vectors → identity, probabilities → softmax
    (labels) or sigmoid (vectors)."""
    if loss.on_probabilities:
        return "softmax" if loss.target == "label" else "sigmoid"
    return "identity"


def problem(net: fnn.MLP, loss: str, dtype: str, seed: int, batch: int = 4):
    """Random parameters, inputs and targets the loss accepts (labels, probabilities or
    vectors), drawn by NumPy: a jax.random draw would compile for every new shape."""
    rng = np.random.default_rng(seed)
    params = [
        {k: jnp.asarray(rng.normal(0.0, 0.6, s), dtype) for k, s in layer.items()}
        for layer in net.layer_shapes()
    ]
    x = jnp.asarray(rng.normal(size=(batch, net.in_features)), dtype)
    target = fnn.losses.get(loss)
    if target.target == "label":
        y = jnp.asarray(rng.integers(0, net.out_features, batch))
    elif target.on_probabilities:
        y = jnp.asarray(rng.uniform(size=(batch, net.out_features)), dtype)
    else:
        y = jnp.asarray(rng.normal(size=(batch, net.out_features)), dtype)
    return params, x, y


def cases(activations, losses):
    """(activation, loss, net): each activation with L2, each loss after tanh (once: tanh
    with L2 is already an activation case when tanh is among the activations)."""
    for act in activations:
        yield act, "l2", fnn.MLP(SIZES, (act, "identity"))
    for loss in losses:
        if loss == "l2" and "tanh" in activations:
            continue
        out = output_activation(fnn.losses.get(loss))
        yield "tanh", loss, fnn.MLP(SIZES, ("tanh", out))


def check_all(cases, methods, seed, quick=False):
    """Central differences once per case and dtype, compared with every method (quick: one
    method per case, in turn, so that each is still checked on several cases)."""
    rows = []
    for i, (act, loss, net) in enumerate(cases):
        chosen = (methods[i % len(methods)],) if quick else methods
        by_method = {m: {"activation": act, "loss": loss, "method": m} for m in chosen}
        for dtype in DTYPES:
            params, x, y = problem(net, loss, dtype, seed + i)
            fd = gradcheck.network_central_difference(net, params, x, y, loss=loss)
            grads = hand_gradients(net, params, x, y, loss, chosen)
            for method, row in by_method.items():
                report = gradcheck.compare_network(grads[method], fd)
                row[dtype] = report.max_error
                row[f"median_{dtype}"] = report.median_error
                row[f"kinks_{dtype}"] = report.num_kinks
                row[f"passed_{dtype}"] = report.passed
                if not report.passed:
                    print(f"\n{act} / {loss} / {method}:\n{report}")
        rows += by_method.values()
    return rows


def print_checks(rows):
    print("Worst relative error, hand-written gradient vs central differences (default ε):")
    print(f"{'activation':<11} {'loss':<22} {'method':<9} {'float64':>9} {'float32':>9}  kinks")
    for r in rows:
        ok = r["passed_float64"] and r["passed_float32"]
        print(
            f"{r['activation']:<11} {r['loss']:<22} {r['method']:<9} {r['float64']:9.1e} "
            f"{r['float32']:9.1e}  {r['kinks_float64']:>5}  {'ok' if ok else 'FAIL'}"
        )
    thresholds = ", ".join(f"{d} {gradcheck.THRESHOLDS[d]:.0e}" for d in DTYPES)
    print(
        "(the oracle: float64 central differences for both dtypes; the column: the relative\n"
        " error of the worst entry; pass: every entry |a − b| ≤ t (|a| + |b|) + r + u with t ="
        f" {thresholds},\n r = {gradcheck.ROUNDING:g} ε_mach max|b| and u the oracle's "
        "resolution; kinks: entries whose θ ± h crosses a kink)"
    )


def sweep(epsilons, seed):
    """The V-curve on a tanh network, reference: the float64 hand-written gradient."""
    net = fnn.MLP((4, 8, 3), ("tanh", "identity"))
    params, x, y = problem(net, "l2", "float64", seed)
    tree = {"params": params, "x": x}
    _, reference = value_and_grad(net, params, x, y)

    def f(t):
        return gradcheck.network_loss(net, t["params"], t["x"], y)

    curves = {}
    for dtype in DTYPES:
        cast = jax.tree.map(lambda a, dtype=dtype: a.astype(dtype), tree)
        s = numerical.error_vs_eps(f, cast, reference, epsilons)
        best = int(np.argmin(s.median_error))
        curves[dtype] = {
            "eps": list(s.eps),
            "median_error": list(s.median_error),
            "max_error": list(s.max_error),
            "default_eps": numerical.default_eps(dtype),
            "best_eps": s.eps[best],
            "best_median_error": s.median_error[best],
        }
    return curves


def print_sweep(curves):
    print("\nError of central differences against ε (median / worst relative error):")
    print(f"{'ε':>8} " + " ".join(f"{d + ' median':>15} {'worst':>9}" for d in DTYPES))
    for i, eps in enumerate(curves[DTYPES[0]]["eps"]):
        cells = " ".join(
            f"{curves[d]['median_error'][i]:15.1e} {curves[d]['max_error'][i]:9.1e}" for d in DTYPES
        )
        print(f"{eps:8.1e} {cells}")
    for d in DTYPES:
        c = curves[d]
        print(
            f"{d}: best ε ≈ {c['best_eps']:.1e} (median error {c['best_median_error']:.1e}); "
            f"default ε = ε_mach^(1/3) = {c['default_eps']:.1e}"
        )


def plot_sweep(curves, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for d, color in zip(DTYPES, ("tab:blue", "tab:orange")):
        c = curves[d]
        ax.loglog(c["eps"], c["median_error"], "o-", color=color, ms=3, label=f"{d} median")
        ax.loglog(c["eps"], c["max_error"], ":", color=color, label=f"{d} worst entry")
        ax.axvline(c["default_eps"], color=color, lw=0.8, ls="--")
    eps = np.array(curves["float64"]["eps"])
    anchor = curves["float64"]["median_error"][0] / eps[0] ** 2
    ax.loglog(eps, anchor * eps**2, color="gray", lw=0.8, label="O(ε²) truncation")
    for d in DTYPES:
        ax.loglog(eps, np.finfo(d).eps / eps, color="gray", lw=0.8, ls="-.")
    ax.plot([], [], color="gray", lw=0.8, ls="-.", label="ε_mach / ε round-off")
    ax.set(xlabel="ε", ylabel="relative error vs hand-written gradient", ylim=(1e-13, 2))
    ax.set_title("Central differences: truncation vs round-off (dashed: default ε)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cost(sizes, seed):
    rows = []
    for D, H, M in sizes:
        net = fnn.MLP((D, H, H, M), ("tanh", "tanh", "identity"))
        params, x, y = problem(net, "l2", "float32", seed, batch=16)

        def f(p, net=net, x=x, y=y):
            return gradcheck.network_loss(net, p, x, y)

        def grad_fn(p, net=net, x=x, y=y):
            return value_and_grad(net, p, x, y)[1]["params"]

        c = numerical.compare_cost(f, params, grad_fn)
        rows.append({"sizes": list(net.sizes), **c._asdict(), "ratio": c.ratio})
    return rows


def print_cost(rows):
    print("\nCost (float32, batch 16, best of 3, compiled; timings on a shared CPU are noisy):")
    print(f"{'network':<16} {'P':>7} {'evaluations':>11} {'central ms':>11} "
          f"{'backprop ms':>11} {'ratio':>7}")  # fmt: skip
    for r in rows:
        arch = "→".join(map(str, r["sizes"]))
        print(
            f"{arch:<16} {r['num_params']:7d} {r['fd_evaluations']:11d} "
            f"{r['fd_seconds'] * 1e3:11.2f} {r['backward_seconds'] * 1e3:11.3f} "
            f"{r['ratio']:6.0f}×"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="one method per case, fewer ε values and sizes"
    )
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--activations", help="comma-separated names (default: all)")
    parser.add_argument("--losses", help="comma-separated names (default: all)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    activations = args.activations.split(",") if args.activations else fnn.activations.names()
    losses = args.losses.split(",") if args.losses else fnn.losses.names()
    for name in activations:
        fnn.activations.get(name)  # ValueError listing the valid names
    for name in losses:
        fnn.losses.get(name)

    methods = fnn.derivatives.METHODS
    rows = check_all(list(cases(activations, losses)), methods, args.seed, args.quick)
    print_checks(rows)
    epsilons = np.logspace(-1, -12, 12) if args.quick else numerical.EPS_SWEEP
    curves = sweep(tuple(float(e) for e in epsilons), args.seed)
    print_sweep(curves)
    plot_sweep(curves, args.out / "fd_error_vs_eps.png")
    costs = cost(COST_SIZES[:1] if args.quick else COST_SIZES, args.seed)
    print_cost(costs)

    all_passed = all(r["passed_float64"] and r["passed_float32"] for r in rows)
    result = {
        "config": {"quick": args.quick, "seed": args.seed, "sizes": SIZES, "methods": methods},
        "machine": {"platform": platform.platform(), "device": str(jax.devices()[0])},
        "thresholds": {d: gradcheck.THRESHOLDS[d] for d in DTYPES},
        "checks": rows,
        "all_passed": all_passed,
        "sweep": curves,
        "cost": costs,
    }
    (args.out / "gradient_check.json").write_text(json.dumps(result, indent=1))
    print(f"\n{'All checks passed' if all_passed else 'SOME CHECKS FAILED'}; wrote "
          f"{args.out / 'gradient_check.json'} and {args.out / 'fd_error_vs_eps.png'}")  # fmt: skip
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
