"""The power of the gradient check: how often it catches a wrong entry, how often it fails a
correct gradient (S11, S19).

Mutation experiment: random float32 networks, every hidden activation and every loss (with
the output it takes), the three backprop methods in turn; for each, the correct gradient of
``fnn.value_and_grad`` is checked, then every single entry of magnitude ≥ 1e-4 × the largest
|entry| (kink entries left out) is multiplied by 2, 0, −1 or 1.01, one at a time, and
checked again against the same central differences. A wrong gradient that passes is a
false pass; a correct one that does not pass, a false alarm.

False-alarm sweep: correct gradients of float32 and float64 networks (counted apart), every
activation and every loss, batches of 1–3, three architectures, the three methods, in eight
regimes of weights, biases and inputs — normal, small, tiny and large weights, dead units
(negative biases), saturated units (large weights or inputs), tiny inputs, large weights
with dead units. Every one must pass, or be UNRESOLVED where the oracle is *blind*: where
even the widest step of its second look cannot resolve ``FLOOR`` times the gradient's
largest entry (then the rule says UNRESOLVED). A problem whose loss or gradient is not
finite at θ is skipped and counted; a float32 gradient that is itself off is counted apart.

Directional experiment (``--directional``): ``check_directional`` on random 7-parameter
float32 networks (1 → 2 → 1, tanh) with one entry 10 % wrong, for k = 1, 2, 4, 8, 16
directions: the share missed, and the smallest relative error of the whole gradient each
check can detect.

  python scripts/gradcheck_power.py          # 6 networks, 48 gradients: well under a minute
  python scripts/gradcheck_power.py --full   # 210 networks, 2400 gradients, the k sweep
  python scripts/gradcheck_power.py --quick  # 2 networks, 8 gradients, for the tests

Writes ``results/gradcheck_power.json`` and ``results/gradcheck_power.png`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from jax.flatten_util import ravel_pytree

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import fnn
from fnn import gradcheck, network_checks
from fnn.extrapolation import look_again, per_step, rungs
from fnn.numerical import default_eps

# The sweep's float64 half needs float64 arrays; the float32 networks stay float32.
jax.config.update("jax_enable_x64", True)

FACTORS = (2.0, 0.0, -1.0, 1.01)
SIZES = ((3, 4, 2), (2, 3, 3, 2))
BATCH = 3
SMALLEST = 1e-4  # entries of magnitude ≥ SMALLEST × the largest |entry| are mutated
DIRECTIONS = (1, 2, 4, 8, 16)


def output_activation(loss: str) -> str:
    """The output a loss takes: probabilities → softmax (labels) or sigmoid, else identity."""
    spec = fnn.losses.get(loss)
    if spec.on_probabilities:
        return "softmax" if spec.target == "label" else "sigmoid"
    return "identity"


def problem(i: int):
    """Network i: activation i mod 14, loss ⌊i / 14⌋ mod 5, method i mod 3, float32."""
    acts, losses = fnn.activations.names(), fnn.losses.names()
    act, loss = acts[i % len(acts)], losses[(i // len(acts)) % len(losses)]
    methods = tuple(fnn.derivatives.METHODS)
    method = methods[i % len(methods)]
    sizes = SIZES[(i // (len(acts) * len(losses))) % len(SIZES)]
    net = fnn.MLP(sizes, (act,) * (len(sizes) - 2) + (output_activation(loss),))
    rng = np.random.default_rng(i)
    params = [
        {k: jnp.asarray(rng.normal(0.0, 0.6, s), jnp.float32) for k, s in layer.items()}
        for layer in net.layer_shapes()
    ]
    x = jnp.asarray(rng.normal(size=(BATCH, sizes[0])), jnp.float32)
    spec = fnn.losses.get(loss)
    if spec.target == "label":
        y = jnp.asarray(rng.integers(0, sizes[-1], BATCH))
    elif spec.on_probabilities:
        y = jnp.asarray(rng.uniform(size=(BATCH, sizes[-1])), jnp.float32)
    else:
        y = jnp.asarray(rng.normal(size=(BATCH, sizes[-1])), jnp.float32)
    return net, params, x, y, act, loss, method


value_and_grad = jax.jit(fnn.value_and_grad, static_argnames=("loss", "method"))


def judge(grads, fd):
    """The verdict of ``check_network`` on a computed ``fd`` (``compare`` where a version of
    fnn has no ``compare_network``), before any second look."""
    if hasattr(gradcheck, "compare_network"):
        return gradcheck.compare_network(grads, fd)
    return gradcheck.compare(grads, fd.numerical, kinks=fd.kinks, value=fd.value)


def checker(net, params, x, y, loss):
    """``check_network``'s verdict on many gradients of one problem: its central differences
    computed once, and the quotients of its second look once each, when a gradient first
    needs them (where this version of fnn has a second look)."""
    fd = gradcheck.network_central_difference(net, params, x, y, loss=loss)
    loss_fn = fnn.losses.get(loss)
    wider = getattr(network_checks, "wider_quotient", None)
    quotient_at = functools.cache(
        lambda step: wider(net, params, x, y, loss_fn, gradcheck.ORACLE, step)
    )

    def check(grads):
        report = judge(grads, fd)
        if verdict(report) != "PASS" and not report.nonfinite and wider is not None:
            report = look_again(
                fd.numerical, quotient_at, default_eps(fd.oracle_dtype),
                per_step(report.resolution, {"params": params, "x": x}),
                lambda better, resolutions, looks: judge(grads, fd._replace(
                    second=(better, resolutions),
                    num_evaluations=looks * fd.num_evaluations)),
            )  # fmt: skip
        return report

    return fd, check


def verdict(report) -> str:
    """PASS / FAIL / UNRESOLVED (a version without ``verdict`` knows only pass and fail)."""
    return getattr(report, "verdict", "PASS" if report.passed else "FAIL")


def mutation_experiment(networks: int):
    rows, tallies = [], {f: {"PASS": 0, "FAIL": 0, "UNRESOLVED": 0} for f in FACTORS}
    correct = {"PASS": 0, "FAIL": 0, "UNRESOLVED": 0}
    for i in range(networks):
        net, params, x, y, act, loss, method = problem(i)
        _, grads = value_and_grad(net, params, x, y, loss=loss, method=method)
        fd, check = checker(net, params, x, y, loss)
        base = verdict(check(grads))
        correct[base] += 1
        flat, unravel = ravel_pytree(grads)
        size = np.abs(np.asarray(flat, np.float64))
        kinks = np.asarray(ravel_pytree(fd.kinks)[0], bool)
        chosen = np.flatnonzero(~kinks & (size >= SMALLEST * size[~kinks].max(initial=0.0)))
        missed = []
        for j in chosen:
            for factor in FACTORS:
                outcome = verdict(check(unravel(flat.at[j].multiply(factor))))
                tallies[factor][outcome] += 1
                if outcome == "PASS":
                    missed.append({"entry": int(j), "factor": factor, "size": float(size[j]),
                                   "relative_size": float(size[j] / size.max())})  # fmt: skip
        rows.append({
            "network": i, "sizes": list(net.sizes), "activation": act, "loss": loss,
            "method": method, "correct": base, "entries": int(size.size),
            "kinks": int(kinks.sum()), "mutated_entries": int(chosen.size), "missed": missed,
        })  # fmt: skip
    return rows, tallies, correct


def print_mutations(rows, tallies, correct):
    total = sum(correct.values())
    print(f"Mutation experiment: {total} float32 networks, {fnn.__file__}")
    print(f"{'mutation':<10} {'cases':>7} {'caught':>8} {'FAIL':>7} {'UNRES.':>7} {'missed':>7}")
    cases = caught = 0
    for factor, t in tallies.items():
        n = sum(t.values())
        cases, caught = cases + n, caught + n - t["PASS"]
        share = (n - t["PASS"]) / max(n, 1)
        print(f"× {factor:<8g} {n:7d} {share:8.2%} {t['FAIL']:7d} {t['UNRESOLVED']:7d} "
              f"{t['PASS']:7d}")  # fmt: skip
    print(f"{'all':<10} {cases:7d} {caught / max(cases, 1):8.2%}   (false passes: "
          f"{(cases - caught) / max(cases, 1):.2%})")  # fmt: skip
    alarms = total - correct["PASS"]
    print(f"correct gradients: {correct['PASS']} of {total} pass; false alarms {alarms} "
          f"({alarms / max(total, 1):.1%}: {correct['FAIL']} FAIL, "
          f"{correct['UNRESOLVED']} UNRESOLVED)")  # fmt: skip
    for r in rows:
        if r["correct"] != "PASS":
            print(f"  false alarm: network {r['network']} {r['activation']}/{r['loss']}/"
                  f"{r['method']}: {r['correct']}")  # fmt: skip
    return caught / max(cases, 1), alarms / max(total, 1)


# The directional experiment's data: fixed, so that its f compiles once per k.
_X = np.random.default_rng(1).normal(size=(4, 1)).astype(np.float32)
_Y = np.random.default_rng(2).normal(size=(4, 1)).astype(np.float32)
_NET = fnn.MLP((1, 2, 1), ("tanh", "identity"))  # 7 parameters


def _loss(params):
    """L(θ) on the fixed data, in the parameters' dtype (float64 under the float64 oracle)."""
    dtype = jax.tree.leaves(params)[0].dtype
    return gradcheck.network_loss(_NET, params, jnp.asarray(_X, dtype), jnp.asarray(_Y, dtype))


def directional_experiment(trials: int):
    """One 10 % error in one of the 7 entries of a 1 → 2 → 1 tanh network, float32; the
    share missed over all trials, and over those whose wrong entry is ≥ 0.1 × the largest
    (a 10 % error in a tiny entry is below any tolerance, whatever k)."""
    missed = {k: [] for k in DIRECTIONS}
    detectable = {k: [] for k in DIRECTIONS}
    sizes = []
    for t in range(trials):
        rng = np.random.default_rng(10_000 + t)
        params = [
            {k: jnp.asarray(rng.normal(0.0, 1.0, s), jnp.float32) for k, s in layer.items()}
            for layer in _NET.layer_shapes()
        ]
        _, grads = value_and_grad(_NET, params, jnp.asarray(_X), jnp.asarray(_Y))
        flat, unravel = ravel_pytree(grads["params"])
        j = int(rng.integers(flat.size))
        sizes.append(float(abs(flat[j]) / jnp.max(jnp.abs(flat))))
        wrong = unravel(flat.at[j].multiply(1.1))
        for k in DIRECTIONS:
            report = gradcheck.check_directional(_loss, params, wrong, key=jax.random.key(t), k=k)
            missed[k].append(bool(report.passed))
            detectable[k].append(getattr(report, "min_detectable", float("nan")))
    large = np.asarray(sizes) >= 0.1
    return {
        k: {
            "missed": float(np.mean(missed[k])),
            "missed_large": float(np.mean(np.asarray(missed[k])[large])) if large.any() else None,
            "large_trials": int(large.sum()),
            "median_min_detectable": float(np.median(detectable[k])),
        }
        for k in DIRECTIONS
    }


def print_directional(result, trials):
    large = next(iter(result.values()))["large_trials"]
    print(f"\nDirectional check: one of 7 entries 10 % wrong, {trials} float32 networks")
    print(f"{'k':>3} {'missed':>8} {f'missed, entry ≥ 0.1 max ({large})':>30} "
          f"{'smallest detectable relative error (median)':>44}")  # fmt: skip
    for k, r in result.items():
        large_share = "" if r["missed_large"] is None else f"{r['missed_large']:.1%}"
        print(f"{k:3d} {r['missed']:8.1%} {large_share:>30} {r['median_min_detectable']:44.1e}")


# ---------------------------------------------------------------------------------------
# False alarms: correct gradients in every regime a user meets.
# ---------------------------------------------------------------------------------------

# (name, weight std, hidden bias, input scale): dead units come from negative biases,
# saturated ones from large weights or inputs.
REGIMES = (
    ("normal", 0.6, 0.0, 1.0),
    ("tiny weights", 1e-3, 0.0, 1.0),
    ("large weights", 3.0, 0.0, 1.0),
    ("dead units", 0.6, -1.5, 1.0),
    ("saturated", 1.5, 0.0, 20.0),
    ("small", 0.1, 0.0, 1.0),
    ("tiny inputs", 0.6, 0.0, 1e-3),
    ("large, dead", 3.0, -3.0, 3.0),
)
SWEEP_SIZES = ((3, 4, 2), (2, 3, 3, 2), (4, 5, 3))


def sweep_config(c: int):
    """Configuration c: activation c mod 14, loss ⌊c / 14⌋ mod 5, dtype, batch 1–3, method,
    sizes — each (network, dtype, batch) compiled once for all its regimes."""
    acts, losses = fnn.activations.names(), fnn.losses.names()
    act, loss = acts[c % len(acts)], losses[(c // len(acts)) % len(losses)]
    dtype = ("float32", "float64")[(c // (len(acts) * len(losses))) % 2]
    methods = tuple(fnn.derivatives.METHODS)
    sizes = SWEEP_SIZES[c % len(SWEEP_SIZES)]
    net = fnn.MLP(sizes, (act,) * (len(sizes) - 2) + (output_activation(loss),))
    return net, act, loss, dtype, 1 + c % 3, methods[c % len(methods)]


def sweep_problem(net, loss, dtype, batch, regime, seed):
    """Parameters, inputs and targets of one regime, drawn by NumPy."""
    _, std, bias, scale = regime
    rng = np.random.default_rng(seed)
    params = []
    for layer, shapes in enumerate(net.layer_shapes()):
        hidden = layer < net.num_layers - 1
        p = {k: rng.normal(0.0, std, s) for k, s in shapes.items()}
        p["b"] = p["b"] + (bias if hidden else 0.0)
        params.append({k: jnp.asarray(v, dtype) for k, v in p.items()})
    x = jnp.asarray(scale * rng.normal(size=(batch, net.in_features)), dtype)
    spec = fnn.losses.get(loss)
    if spec.target == "label":
        y = jnp.asarray(rng.integers(0, net.out_features, batch))
    elif spec.on_probabilities:
        y = jnp.asarray(rng.uniform(size=(batch, net.out_features)), dtype)
    else:
        y = jnp.asarray(rng.normal(size=(batch, net.out_features)), dtype)
    return params, x, y


def false_alarm_sweep(n: int, seed: int = 0):
    """``n`` correct gradients over every activation, loss, dtype, batch 1–3 and regime: how
    many do not pass. A problem whose loss or gradient is not finite at θ (a probability
    that underflowed) is no correct gradient to check: skipped, and counted; a float32
    gradient that is itself off (:func:`inaccurate`) is a true alarm, counted apart."""
    tally = {d: {"checked": 0, "PASS": 0, "FAIL": 0, "UNRESOLVED": 0, "blind": 0, "inaccurate": 0,
                 "skipped": 0} for d in ("float32", "float64")}  # fmt: skip
    alarms = []
    for i in range(n):
        c, r = divmod(i, len(REGIMES))
        net, act, loss, dtype, batch, method = sweep_config(c)
        params, x, y = sweep_problem(net, loss, dtype, batch, REGIMES[r], seed + i)
        value, grads = value_and_grad(net, params, x, y, loss=loss, method=method)
        t = tally[dtype]
        if not (np.isfinite(float(value)) and all(
            np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))):  # fmt: skip
            t["skipped"] += 1
            continue
        fd, check = checker(net, params, x, y, loss)
        report = check(grads)
        t["checked"] += 1
        v = verdict(report)
        if v == "UNRESOLVED" and blind(fd, report):
            v = "blind"
        elif v != "PASS" and inaccurate(net, params, x, y, loss, method, grads):
            v = "inaccurate"
        t[v] += 1
        if v in ("FAIL", "UNRESOLVED", "blind"):
            alarms.append({"gradient": i, "verdict": v, "activation": act, "loss": loss,
                           "dtype": dtype, "regime": REGIMES[r][0], "batch": batch,
                           "method": method, "report": str(report)})  # fmt: skip
    return tally, alarms


def blind(fd, report) -> bool:
    """Whether the oracle cannot resolve this gradient's scale even at the widest step of
    its second look: its round-off there, ``1.5 u h / H``, exceeds ``FLOOR · max |b|`` — a
    loss that float64 cannot difference finely enough (a probability rounded near 1, a loss
    of 1e-10 beside rounding of 1e-16). UNRESOLVED is then the rule's answer, not an alarm:
    an error the oracle cannot see would matter next to a gradient that small."""
    steps = rungs(default_eps(fd.oracle_dtype))
    widest = 1.5 * report.resolution * steps[0] / steps[-2]
    numerical = np.abs(ravel_pytree(fd.numerical)[0])
    scale = np.max(np.where(ravel_pytree(fd.kinks)[0], 0.0, numerical), initial=0.0)
    return widest > gradcheck.FLOOR * scale


def inaccurate(net, params, x, y, loss, method, grads) -> bool:
    """Whether a float32 gradient is itself off: the same method in float64 (the inputs
    upcast exactly) differs from it beyond ``t (|a| + |b|) + r``. The oracle is then right,
    not alarmed: the number in hand is not the gradient (e.g. a loss of a probability
    rounded to 1 in float32). A float64 gradient is never counted here."""
    if ravel_pytree(grads)[0].dtype == jnp.float64:
        return False

    def up(t):
        return jnp.asarray(t, jnp.float64) if jnp.issubdtype(t.dtype, jnp.floating) else t

    p64, x64, y64 = jax.tree.map(up, (params, x, y))
    _, g64 = value_and_grad(net, p64, x64, y64, loss=loss, method=method)
    return not gradcheck.compare(grads, g64, resolution=0.0).passed


def print_sweep(tally, alarms):
    print("\nFalse-alarm sweep: correct gradients, every activation, loss and regime")
    print(f"{'dtype':<8} {'checked':>8} {'PASS':>6} {'FAIL':>6} {'UNRES.':>7} {'blind':>6} "
          f"{'inaccurate':>11} {'skipped':>8}")  # fmt: skip
    for dtype, t in tally.items():
        print(f"{dtype:<8} {t['checked']:8d} {t['PASS']:6d} {t['FAIL']:6d} {t['UNRESOLVED']:7d} "
              f"{t['blind']:6d} {t['inaccurate']:11d} {t['skipped']:8d}")  # fmt: skip
    print("regimes: " + ", ".join(r[0] for r in REGIMES) + ".\nFAIL and UNRES. are false "
          "alarms. blind: UNRESOLVED where even the second look's widest step cannot\n"
          "resolve 1e-5 × the gradient's largest entry (the rule's answer); inaccurate: the "
          "float32\ngradient itself differs from the same method in float64 beyond the "
          "tolerance (the oracle\nis right); skipped: loss or gradient not finite at θ."
          )  # fmt: skip
    where = collections.Counter(f"{a['loss']} ({a['regime']})" for a in alarms
                                if a["verdict"] == "blind")  # fmt: skip
    if where:
        print("blind: " + ", ".join(f"{k} {n}" for k, n in where.most_common()))
    for a in [a for a in alarms if a["verdict"] != "blind"][:10]:
        print(f"  false alarm: gradient {a['gradient']} {a['activation']}/{a['loss']}/"
              f"{a['dtype']}/{a['regime']}:\n{a['report']}")  # fmt: skip


def plot(tallies, correct, directional, path):
    fig, axes = plt.subplots(1, 2 if directional else 1, figsize=(10 if directional else 5, 4))
    axes = np.atleast_1d(axes)
    names = [f"×{f:g}" for f in FACTORS]
    caught = [1 - t["PASS"] / max(sum(t.values()), 1) for t in tallies.values()]
    axes[0].bar(names, caught, color="tab:blue")
    axes[0].axhline(0.99, color="gray", ls="--", lw=0.8, label="goal 99 %")
    total = sum(correct.values())
    axes[0].set(ylim=(0, 1.05), ylabel="share caught",
                title=f"one wrong entry; correct pass {correct['PASS']}/{total}")  # fmt: skip
    axes[0].legend()
    if directional:
        ks = list(directional)
        axes[1].semilogx(ks, [directional[k]["missed"] for k in ks], "o-", base=2,
                         label="any entry")  # fmt: skip
        large = [directional[k]["missed_large"] for k in ks]
        if None not in large:
            axes[1].semilogx(ks, large, "s--", base=2, label="entry ≥ 0.1 × the largest")
        axes[1].legend()
        axes[1].set(xlabel="k directions", ylabel="share missed",
                    title="directional check, 10 % error in 1 of 7")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=int, default=6, help="mutated networks (default 6)")
    parser.add_argument("--sweep", type=int, default=48, help="correct gradients (default 48)")
    parser.add_argument("--directional", action="store_true", help="the k sweep as well")
    parser.add_argument("--trials", type=int, default=200, help="directional trials")
    parser.add_argument("--full", action="store_true", help="210 networks, 2400 gradients, k")
    parser.add_argument("--quick", action="store_true", help="2 networks, 8 gradients, 2 trials")
    parser.add_argument("--seed", type=int, default=0, help="first seed of the sweep's draws")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args(argv)
    if args.networks < 0 or args.sweep < 0 or args.trials < 1:
        parser.error(f"--networks and --sweep must be ≥ 0 and --trials positive; got "
                     f"{args.networks}, {args.sweep}, {args.trials}")  # fmt: skip
    if args.full:
        args.networks, args.sweep, args.directional = 210, 2400, True
    if args.quick:
        args.networks, args.sweep, args.trials = 2, 8, 2
    return args


def main(argv=None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, tallies, correct = mutation_experiment(args.networks)
    caught, alarms = print_mutations(rows, tallies, correct) if rows else (None, None)
    sweep, sweep_alarms = false_alarm_sweep(args.sweep, args.seed)
    print_sweep(sweep, sweep_alarms)
    directional = None
    if args.directional or args.quick:
        directional = directional_experiment(args.trials)
        print_directional(directional, args.trials)
    plot(tallies, correct, directional, args.out / "gradcheck_power.png")
    config = {"networks": args.networks, "sweep": args.sweep, "seed": args.seed, "factors": FACTORS,
              "smallest": SMALLEST, "batch": BATCH, "trials": args.trials,
              "regimes": REGIMES}  # fmt: skip
    result = {
        "config": config,
        "fnn": fnn.__file__,
        "machine": {"platform": platform.platform(), "device": str(jax.devices()[0])},
        "caught": caught,
        "false_alarms": alarms,
        "tallies": {str(f): t for f, t in tallies.items()},
        "correct": correct,
        "networks": rows,
        "sweep": sweep,
        "sweep_false_alarms": sum(t["FAIL"] + t["UNRESOLVED"] for t in sweep.values()),
        "sweep_alarms": sweep_alarms,
        "directional": {str(k): v for k, v in (directional or {}).items()},
    }
    (args.out / "gradcheck_power.json").write_text(json.dumps(result, indent=1))
    print(f"\nWrote {args.out / 'gradcheck_power.json'} and {args.out / 'gradcheck_power.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
