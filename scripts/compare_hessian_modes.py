"""Second order by hand and by mode compositions: HVPs, dense Hessians, spectra (S27–S29).

Three parts, each checked, timed (jit-compiled, warmed up, interleaved, medians) and counted
by fnn.cost_model:

  1. Hessian-vector products on D → H → H → M, float32: fnn.hvp (the R-operator by hand,
     one forward and one backward pass) against jax.jvp(jax.grad) and reverse-over-reverse
     (jax.grad of ⟨∇L, v⟩), and beside the gradient itself.
  2. Dense Hessians (P, P) by the four compositions of fnn.hessian — fwd_over_rev,
     rev_over_rev, rev_over_fwd, fwd_over_fwd — over a sweep of network sizes, float64, each
     checked against jax.hessian, with the cost model's multiply-adds beside the times.
  3. The eigenvalue spectra of the Hessian and of the Gauss–Newton matrix of a small network
     trained on y = sin(3x): the GGN is positive semi-definite, the Hessian is not.

Prints a table and a verdict, writes results/compare_hessian_modes.{json,png}.

  python scripts/compare_hessian_modes.py            # defaults: about a minute on 2 cores
  python scripts/compare_hessian_modes.py --quick    # small networks: compiling dominates
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import fnn
from fnn import cost_model, curvature

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import timing  # benchmarks/timing.py: interleaved medians, paired ratios

jax.config.update("jax_enable_x64", True)  # parts 2 and 3 are float64; part 1 asks for float32

FULL = {"hvp": (64, 256, 256, 10), "batch": 64, "hidden": (4, 8, 12), "reps": 9, "steps": 400}
QUICK = {"hvp": (16, 32, 32, 4), "batch": 16, "hidden": (4,), "reps": 3, "steps": 100}
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}  # max |a − b| / max(1, max |b|)


def problem(sizes, batch, dtype, seed, act="tanh"):
    net = fnn.MLP(sizes, (act,) * (len(sizes) - 2) + ("identity",))
    k = jax.random.split(jax.random.key(seed), 4)
    params, v = fnn.init(k[0], net, dtype=dtype), fnn.init(k[1], net, dtype=dtype)
    x = jax.random.normal(k[2], (batch, sizes[0]), dtype)
    y = jax.random.normal(k[3], (batch, sizes[-1]), dtype)
    return net, params, v, x, y


def batch_loss(net, x, y):
    return lambda p: jnp.mean(jax.vmap(fnn.losses.get("l2").fn)(fnn.apply(net, p, x), y))


def error(a, b):
    a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
    return float(jnp.max(jnp.abs(a - b)) / jnp.maximum(1, jnp.max(jnp.abs(b))))


# ---------------------------------------------------------------------------------------
# 1. Hessian-vector products.
# ---------------------------------------------------------------------------------------


def hvp_part(sizes, batch, reps, seed):
    net, params, v, x, y = problem(sizes, batch, jnp.float32, seed)

    def jvp_grad(p, x, y, v):
        return jax.jvp(jax.grad(batch_loss(net, x, y)), (p,), (v,))[1]

    def rev_over_rev(p, x, y, v):  # ∇θ ⟨∇θ L, v⟩
        grad = jax.grad(batch_loss(net, x, y))
        return jax.grad(lambda q: jnp.vdot(ravel_pytree(grad(q))[0], ravel_pytree(v)[0]))(p)

    fns = {
        "r_operator": jax.jit(lambda p, x, y, v: fnn.hvp(net, p, x, y, v)),
        "jax.jvp(jax.grad)": jax.jit(jvp_grad),
        "rev_over_rev": jax.jit(rev_over_rev),
        "gradient": jax.jit(lambda p, x, y, v: fnn.value_and_grad(net, p, x, y)),
    }
    args = (params, x, y, v)
    reference = fns["jax.jvp(jax.grad)"](*args)
    errors = {n: error(fns[n](*args), reference) for n in ("r_operator", "rev_over_rev")}
    samples = timing.interleaved(fns, args, reps)
    return {
        "sizes": list(sizes),
        "batch": batch,
        "time_s": {n: timing.median(s) for n, s in samples.items() if n != "gradient"},
        "gradient_s": timing.median(samples["gradient"]),
        "ratio_hand_over_jax": timing.ratio(samples, "r_operator", "jax.jvp(jax.grad)"),
        "spread": timing.spread(samples, "r_operator", "jax.jvp(jax.grad)"),
        "ratio_hvp_over_gradient": timing.ratio(samples, "r_operator", "gradient"),
        "macs": {"hvp": cost_model.hvp_macs(net, "r_operator", batch),
                 "gradient": cost_model.gradient_macs(net, "reverse", batch)},
        "max_error": errors,
        "ok": {n: e <= TOLERANCE["float32"] for n, e in errors.items()},
    }  # fmt: skip


# ---------------------------------------------------------------------------------------
# 2. Dense Hessians by the four compositions.
# ---------------------------------------------------------------------------------------


def dense_fns(net):
    """jax.hessian (the reference, of θ flattened) and fnn.hessian in the four modes."""

    def reference(params, x, y):
        theta, unravel = ravel_pytree(params)
        return jax.hessian(lambda t: batch_loss(net, x, y)(unravel(t)))(theta)

    modes = {
        m: jax.jit(lambda p, x, y, m=m: fnn.hessian(net, p, x, y, method=m))
        for m in curvature.HESSIAN_METHODS
    }
    return jax.jit(reference), modes


def dense_part(hidden_widths, batch, reps, seed):
    rows = []
    for h in hidden_widths:
        net, params, _, x, y = problem((4, h, h, 3), batch, jnp.float64, seed)
        theta = ravel_pytree(params)[0]
        reference, fns = dense_fns(net)
        reference = reference(params, x, y)
        errors = {m: error(f(params, x, y), reference) for m, f in fns.items()}
        samples = timing.interleaved(fns, (params, x, y), reps)
        rows.append(
            {
                "sizes": list(net.sizes),
                "P": int(theta.size),
                "batch": batch,
                "time_s": {m: timing.median(s) for m, s in samples.items()},
                "macs": {m: cost_model.hessian_macs(net, m, batch) for m in fns},
                "max_error": errors,
                "ok": {m: e <= TOLERANCE["float64"] for m, e in errors.items()},
            }
        )
    return rows


# ---------------------------------------------------------------------------------------
# 3. Spectra of H and of the GGN of a trained network.
# ---------------------------------------------------------------------------------------


def spectra_part(steps, seed):
    net = fnn.MLP((1, 12, 12, 1), ("tanh", "tanh", "identity"))
    params = fnn.init(jax.random.key(seed), net, dtype=jnp.float64)
    x = jnp.linspace(-1, 1, 48)[:, None]
    y = jnp.sin(3 * x)
    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(params, state):
        loss, grads = fnn.value_and_grad(net, params, x, y)
        updates, state = optimizer.update(grads["params"], state)
        return optax.apply_updates(params, updates), state, loss

    state = optimizer.init(params)
    for _ in range(steps):
        params, state, loss = step(params, state)
    theta, unravel = ravel_pytree(params)
    H = jax.jit(lambda p: fnn.hessian(net, p, x, y))(params)
    G = jax.jit(jax.vmap(lambda e: ravel_pytree(fnn.ggn_vp(net, params, x, y, unravel(e)))[0]))(
        jnp.eye(theta.size)
    )
    h_eig, g_eig = np.linalg.eigvalsh(np.asarray(H)), np.linalg.eigvalsh(np.asarray(G))
    return {
        "sizes": list(net.sizes),
        "P": int(theta.size),
        "steps": steps,
        "loss": float(loss),
        "hessian": h_eig.tolist(),
        "ggn": g_eig.tolist(),
        "hessian_min": float(h_eig.min()),
        "hessian_max": float(h_eig.max()),
        "hessian_negative": int(np.sum(h_eig < -1e-10 * h_eig.max())),
        "ggn_min": float(g_eig.min()),
        "ggn_max": float(g_eig.max()),
    }


# ---------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------


def ms(s):
    return f"{1e3 * s:9.3f}"


def print_tables(hvp, dense, spectra):
    arch = "-".join(map(str, hvp["sizes"]))
    print(f"\n1. Hessian-vector product, {arch}, batch {hvp['batch']}, float32 (ms per call)")
    for name, t in hvp["time_s"].items():
        print(f"   {name:20}{ms(t)}   max rel. error {hvp['max_error'].get(name, 0.0):.1e}")
    print(f"   {'gradient':20}{ms(hvp['gradient_s'])}")
    print(
        f"   hand ÷ jax.jvp(jax.grad) = {hvp['ratio_hand_over_jax']:.3f} (± {hvp['spread']:.3f}); "
        f"HVP ÷ gradient = {hvp['ratio_hvp_over_gradient']:.2f} "
        f"(cost model {hvp['macs']['hvp'] / hvp['macs']['gradient']:.2f})"
    )
    print("\n2. Dense Hessian (P, P), float64: ms per call (cost model, million multiply-adds)")
    print(f"   {'network':14}{'P':>6}" + "".join(f"{m:>22}" for m in curvature.HESSIAN_METHODS))
    for r in dense:
        cells = "".join(
            f"{ms(r['time_s'][m])} ({r['macs'][m] / 1e6:8.2f})" for m in curvature.HESSIAN_METHODS
        )
        print(f"   {'-'.join(map(str, r['sizes'])):14}{r['P']:6}{cells}")
    print(
        f"\n3. Spectra after {spectra['steps']} Adam steps on sin(3x) "
        f"({'-'.join(map(str, spectra['sizes']))}, P = {spectra['P']}, loss {spectra['loss']:.2e}):"
        f"\n   Hessian eigenvalues in [{spectra['hessian_min']:.3e}, {spectra['hessian_max']:.3e}],"
        f" {spectra['hessian_negative']} negative;"
        f"\n   GGN eigenvalues in [{spectra['ggn_min']:.3e}, {spectra['ggn_max']:.3e}]"
    )


def verdict(hvp, dense, spectra):
    lines = [
        f"Hand R-operator ÷ jax.jvp(jax.grad): {hvp['ratio_hand_over_jax']:.2f} "
        f"(± {hvp['spread']:.2f}, shared machine); reverse-over-reverse ÷ hand: "
        f"{hvp['time_s']['rev_over_rev'] / hvp['time_s']['r_operator']:.2f}.",
        f"HVP ÷ gradient: {hvp['ratio_hvp_over_gradient']:.2f} measured, "
        f"{hvp['macs']['hvp'] / hvp['macs']['gradient']:.2f} counted.",
    ]
    big = dense[-1]
    fastest = min(big["time_s"], key=big["time_s"].get)
    over_fwd = big["time_s"]["fwd_over_fwd"] / big["time_s"]["fwd_over_rev"]
    predicted = big["macs"]["fwd_over_fwd"] / big["macs"]["fwd_over_rev"]
    lines.append(
        f"Dense Hessian, P = {big['P']}: fastest {fastest}; over forward mode ÷ over backprop "
        f"{over_fwd:.1f}× measured, {predicted:.1f}× counted (one tangent per parameter)."
    )
    psd = spectra["ggn_min"] >= -1e-8 * spectra["ggn_max"]
    lines.append(
        f"GGN positive semi-definite: {'yes' if psd else 'NO'} (min {spectra['ggn_min']:.1e}); "
        f"Hessian indefinite: {'yes' if spectra['hessian_min'] < 0 else 'no'} "
        f"({spectra['hessian_negative']} negative eigenvalues)."
    )
    return lines


def plot(dense, spectra, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    P = [r["P"] for r in dense]
    for m in curvature.HESSIAN_METHODS:
        line = ax1.loglog(P, [r["time_s"][m] for r in dense], "o-", label=f"{m} (measured)")[0]
        scale = dense[-1]["time_s"]["fwd_over_rev"] / dense[-1]["macs"]["fwd_over_rev"]
        ax1.loglog(P, [scale * r["macs"][m] for r in dense], ":", color=line.get_color())
    ax1.set(xlabel="parameters P", ylabel="seconds per dense Hessian",
            title="Four compositions (dotted: cost model, scaled)")  # fmt: skip
    ax1.legend(fontsize=8)
    for name, eig in (("Hessian", spectra["hessian"]), ("Gauss–Newton", spectra["ggn"])):
        ax2.plot(np.sort(eig)[::-1], ".", label=name)
    ax2.set_yscale("symlog", linthresh=1e-6)
    ax2.axhline(0, color="gray", lw=0.5)
    arch = "-".join(map(str, spectra["sizes"]))
    ax2.set(xlabel="index", ylabel="eigenvalue (symlog)", title=f"Spectra, trained {arch} MLP")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small networks, few repetitions")
    parser.add_argument("--reps", type=int, help="timing repetitions (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    reps = args.reps or preset["reps"]
    device = jax.devices()[0]
    print(
        f"fnn compare_hessian_modes: {device.platform} ({device.device_kind}), "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}, {reps} reps"
    )
    print("Times are medians of interleaved runs; on a shared machine they are noisy.")
    start = time.perf_counter()
    hvp = hvp_part(preset["hvp"], preset["batch"], reps, args.seed)
    dense = dense_part(preset["hidden"], 8, reps, args.seed)
    spectra = spectra_part(preset["steps"], args.seed)
    print_tables(hvp, dense, spectra)
    lines = verdict(hvp, dense, spectra)
    checks = [*hvp["ok"].values(), *(ok for r in dense for ok in r["ok"].values())]
    all_ok = all(checks)
    lines.append(
        f"All {len(checks)} results checked against JAX (jax.jvp(jax.grad), jax.hessian): "
        + ("every one within tolerance." if all_ok else "SOME FAILED.")
    )
    print("\nVerdict:\n" + "\n".join(f"  - {line}" for line in lines))

    args.out.mkdir(parents=True, exist_ok=True)
    plot(dense, spectra, args.out / "compare_hessian_modes.png")
    result = {
        "config": {"quick": args.quick, "reps": reps, "seed": args.seed, **preset},
        "machine": {
            "platform": device.platform,
            "device": device.device_kind,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
        },
        "hvp": hvp,
        "dense": dense,
        "spectra": spectra,
        "verdict": lines,
        "all_checks_passed": all_ok,
        "seconds": time.perf_counter() - start,
    }
    (args.out / "compare_hessian_modes.json").write_text(json.dumps(result, indent=2))
    print(
        f"\nWrote {args.out / 'compare_hessian_modes.json'} and "
        f"{args.out / 'compare_hessian_modes.png'} in {result['seconds']:.1f} s."
    )
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
