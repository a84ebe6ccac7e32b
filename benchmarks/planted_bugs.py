"""Planted bugs: does the test suite catch a realistic one-line bug in each module?

Each mutation below replaces one line (exactly one occurrence of ``old``) in a module of
``src/fnn``, in a scratch copy of the repository — never in the working tree — and runs the
test modules that cover that module with ``-x -q -m "not slow"`` (the slow end-to-end
script runs are left out, for time). A mutant whose tests fail is caught; one whose tests
pass survived. The original file is restored before the next mutant. First the same test
modules run without a mutation (they must pass), which also fills a persistent XLA
compilation cache in the scratch copy: a mutant then recompiles only what it changed.

  python benchmarks/planted_bugs.py                    # every mutant (about 20–30 min)
  python benchmarks/planted_bugs.py --only cost_model  # the mutants of some modules
  python benchmarks/planted_bugs.py --list             # the mutations, nothing run

Writes ``results/planted_bugs.json`` (or ``--out``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Mutation(NamedTuple):
    module: str  # file under src/fnn
    old: str  # replaced; must occur exactly once
    new: str
    tests: tuple[str, ...]  # test modules under tests/
    bug: str  # what a developer would have done


M = Mutation
MUTATIONS = (
    # _checks.py — the checked boundary
    M("_checks.py", "or value < 1:", "or value < 0:", ("test_numerical.py", "test_gradcheck.py"),
      "check_positive_int accepts 0"),
    M("_checks.py", "if len(shape) == 2 and shape[0] == 0:", "if len(shape) == 2 and shape[0] < 0:",
      ("test_gradcheck.py",), "check_input accepts an empty batch"),
    M("_checks.py", "legacy = dtype == np.uint32 and tuple(np.shape(key)) == (2,)",
      "legacy = dtype == np.uint32", ("test_gradcheck.py",),
      "check_key accepts any uint32 array as a legacy key"),
    M("_checks.py", "bad = None if values is None else _first_outside(values, 0, n, hi_open=True)",
      "bad = None if values is None else _first_outside(values, 0, n)",
      ("test_losses.py",), "label n accepted for n classes"),
    # activations.py
    M("activation_zoo.py", "return jnp.where(a > 0, 1, 0).astype(jnp.result_type(a, float))",
      "return jnp.where(a >= 0, 1, 0).astype(jnp.result_type(a, float))",
      ("test_activations.py",), "ReLU′(0) = 1 instead of the documented 0"),
    M("activation_zoo.py", "return z * (1 - z)", "return z * (1 + z)",
      ("test_activations.py", "test_backprop.py"), "sigmoid′ from the output: a sign"),
    M("activation_zoo.py", "return jnp.where(a > 0, 1, LEAKY_RELU_ALPHA) * ones(a)",
      "return jnp.where(a >= 0, 1, LEAKY_RELU_ALPHA) * ones(a)",
      ("test_activations.py",), "LeakyReLU′(0) = 1 instead of α"),
    M("activation_zoo.py", "return s + 2 * a * s * s_minus * du",
      "return s + a * s * s_minus * du",
      ("test_activations.py",), "gelu_tanh′: the 2 of S′ = 2 S σ(−2u) u′ forgotten"),
    M("activation_zoo.py",
      "e = jnp.exp(a - jax.lax.stop_gradient(jnp.max(a, axis=-1, keepdims=True)))",
      "e = jnp.exp(a)", ("test_activations.py",), "softmax without the max shift"),
    M("activations.py", "return s * (t - jnp.sum(s * t, axis=-1, keepdims=True))",
      "return s * (t - jnp.sum(t, axis=-1, keepdims=True))",
      ("test_activations.py", "test_backprop.py"), "softmax J·t: ⟨s, t⟩ as Σ t"),
    # loss_zoo.py
    M("loss_zoo.py", "return -jnp.sum(xlogy(y, y_hat) + xlog1py(1 - y, -y_hat))",
      "return -jnp.sum(xlogy(y, y_hat) + xlogy(1 - y, 1 - y_hat))",
      ("test_losses.py", "test_contracts.py"), "BCE: log(1 − ŷ) instead of log1p(−ŷ)"),
    M("loss_zoo.py", "return jnp.sign(y_hat - y)", "return jnp.where(y_hat > y, 1.0, -1.0)",
      ("test_losses.py",), "L1′: sign(0) = −1 instead of 0"),
    M("loss_zoo.py", "return m + jnp.log(jnp.sum(jnp.exp(a - m[..., None]), axis=-1))",
      "return jnp.log(jnp.sum(jnp.exp(a), axis=-1))", ("test_losses.py",),
      "logsumexp without the max shift"),
    # network.py
    M("network.py", "layer_params[p] = jnp.asarray(value, dtype)",
      "layer_params[p] = jnp.asarray(value)", ("test_network.py", "test_contracts.py"),
      "PReLU α in the default dtype, not init's"),
    M("network.py", '"glorot_normal": lambda D, M: _normal(math.sqrt(2 / (D + M))),',
      '"glorot_normal": lambda D, M: _normal(math.sqrt(1 / (D + M))),',
      ("test_network.py",), "Glorot normal variance halved"),
    M("network.py", "jax.random.split(key, net.num_layers), net.sizes[:-1]",
      "[key] * net.num_layers, net.sizes[:-1]", ("test_network.py",),
      "init: one key for every layer"),
    # backprop.py
    M("backprop.py", 'return jnp.mean(values), {"params": mean_params, "x": grads["x"] / batch}',
      'return jnp.mean(values), {"params": mean_params, "x": grads["x"]}',
      ("test_backprop.py",), "explicit: ∂L/∂x without the batch mean's 1/B"),
    M("layer.py", "return {k: jnp.sum(g * d(cache.a, **q), axis=-1)",
      "return {k: jnp.sum(d(cache.a, **q), axis=-1)", ("test_backprop.py", "test_layer.py"),
      "reverse: ∂L/∂α without ∂L/∂z"),
    M("backprop.py",
      "return NeuronGrads(a=dL_da, b=dL_da, w=dL_da * cache.z_prev, x=dL_da * w)",
      "return NeuronGrads(a=dL_da, b=dL_da, w=dL_da * cache.z_prev, x=dL_dz * w)",
      ("test_backprop.py",), "neuron: ∂L/∂x from ∂L/∂z"),
    # forward_mode.py
    M("forward_mode.py", 'grad_x = jnp.einsum("bm,bmd->bd", J_L, J_x) / B',
      'grad_x = jnp.einsum("bm,bmd->bd", J_L, J_x)', ("test_forward_mode.py",),
      "forward: ∂L/∂x without 1/B"),
    M("layer.py", "z_dot = z_dot + df_dk(a, **q)[:, None] * p_dot[k]",
      "z_dot = df_dk(a, **q)[:, None] * p_dot[k]", ("test_forward_mode.py", "test_layer.py"),
      "forward: the α tangent replaces instead of adds"),
    # local_jacobians.py
    M("local_jacobians.py",
      "return jnp.eye(W.shape[0], dtype=x.dtype)[:, :, None] * x[None, None, :]",
      "return jnp.ones((W.shape[0], W.shape[0]), x.dtype)[:, :, None] * x[None, None, :]",
      ("test_local_jacobians.py",), "J_a(W) without the Kronecker delta"),
    M("local_jacobians.py", "    return J_g @ J_f\n", "    return J_f @ J_g\n",
      ("test_local_jacobians.py",), "chain rule in the wrong order"),
    # scan.py
    M("_scan.py", "and acts[stop] == acts[start]", "and True", ("test_scan.py",),
      "runs of layers with different activations scanned as one"),
    M("_scan.py", "per_layer += [jax.tree.map(lambda t, k=k: t[k], tree)",
      "per_layer += [jax.tree.map(lambda t, k=k: t[0], tree)", ("test_scan.py",),
      "ungroup: the first layer of a run, every time"),
    # symmetry.py
    M("activations.py", "kinks=(-1.0, 1.0),\n            flip_offset=0.0,", "kinks=(-1.0, 1.0),",
      ("test_symmetry.py", "test_contracts.py"), "hard_tanh missing from the odd activations"),
    M("symmetry.py", ' + offset * (W_next @ mask.astype(W_next.dtype))', "",
      ("test_symmetry.py",),
      "sigmoid flips without the bias correction"),
    M("symmetry.py", "return math.factorial(M) * (2**M if flips else 1)",
      "return math.factorial(M) * (2 * M if flips else 1)", ("test_symmetry.py",),
      "symmetry count 2M instead of 2^M"),
    # training.py, step.py
    M("training.py", "params, opt_state, jax.random.fold_in(run.key, epoch), x, y",
      "params, opt_state, run.key, x, y", ("test_training.py", "test_contracts.py"),
      "the same shuffle every epoch"),
    M("step.py", "updates, opt_state = optimizer.update(grads, opt_state, params, **batch)",
      "updates, opt_state = optimizer.update(grads, opt_state, **batch)",
      ("test_training.py", "test_contracts.py"), "params not passed to optimizer.update"),
    M("training.py", "losses_.mean(axis=1)", "losses_[:, -1]",
      ("test_training.py", "test_contracts.py"), "the epoch's loss is its last step's"),
    # oracle.py, network_checks.py — the gradient checks' verdict and network oracle
    M("oracle.py", "failed = ~finite | (~kinks & (diff > tolerance))",
      "failed = ~finite | (~kinks & (diff >= tolerance))", ("test_gradcheck.py",),
      "tolerance boundary: ≤ turned into <"),
    M("oracle.py", "resolved = ~k & ~v.unresolved", "resolved = ~v.unresolved",
      ("test_gradcheck.py",), "kink entries counted in a leaf's median"),
    M("network_checks.py", "wide = upcast((params, x, y), target)",
      "wide = (params, x, y)", ("test_gradcheck.py",),
      "network oracle not upcast to float64"),
    M("extrapolation.py", "noise = np.where(two, 1.5, 5.0) * u / 2.0**j",
      "noise = np.where(two, 1.5, 5.0) * u / 4.0**j",
      ("test_gradcheck.py",), "the second look's round-off shrinks faster than its step grows"),
    M("extrapolation.py", "blind = np.where(agree, u + diff / 3, u)",
      "blind = np.full(d1.shape, u)",
      ("test_gradcheck.py",), "the first look's own truncation is not measured"),
    M("extrapolation.py", "u_j = noise + np.where(two, diff / 3, diff)", "u_j = noise + diff / 3",
      ("test_gradcheck.py",), "a one-sided pair's truncation taken for a central one's"),
    M("oracle.py", "ROUNDING = 6.0", "ROUNDING = 60.0", ("test_gradcheck.py",),
      "the float32 rounding allowance 10× too loose"),
    M("oracle.py",
      "unresolved = ~kinks & ~failed & below & (granted < u) & (size > 0) & blind",
      "unresolved = ~kinks & ~failed & (size < 0) & (granted < u) & (size > 0) & blind",
      ("test_gradcheck.py",), "unresolved entries reported as passes"),
    # numerical.py
    M("numerical.py", "return values, jnp.where(taken > 0, taken, 2 * h)", "return values, 2 * h",
      ("test_numerical.py",), "central differences divide by 2h, not the represented step"),
    M("numerical.py", "** (2 / 3) * max(1.0, abs(float(value)))", "** (2 / 3)",
      ("test_numerical.py",),
      "the resolution ignores |f(θ)|"),
    M("numerical.py", "check_eps(eps, dtype), relative=relative)",
      "check_eps(eps, dtype), relative=False)", ("test_numerical.py",),
      "error_vs_eps ignores relative="),
    M("numerical.py", "scale = jnp.maximum(1, jnp.abs(theta)) if relative",
      "scale = jnp.abs(theta) if relative", ("test_numerical.py",),
      "relative step without the floor 1 (h = 0 at θ = 0)"),
    # graph.py
    M("graph.py", "dL[name] = functools.reduce(ops.add, terms)", "dL[name] = terms[0]",
      ("test_graph.py",), "backward accumulation keeps only the first child"),
    M("graph.py", "count[node.name] = sum(count[p] for p in node.parents)",
      "count[node.name] = max(count[p] for p in node.parents)", ("test_graph.py",),
      "count_paths by max instead of sum"),
    M("_checks.py", "if needed > limit:", "if needed >= limit:",
      ("test_graph.py", "test_checks.py"), "every limit exclusive"),
    # cost_model.py
    M("cost_model.py", "return 1 if activations.get(name).elementwise else 2", "return 1",
      ("test_cost_model.py",), "softmax J·t counted as 1 MAC per unit, not 2"),
    M("cost_model.py", "return sum(m * d + _per_unit(f) * m for d, m, f in zip(",
      "return sum(m * d for d, m, f in zip(", ("test_cost_model.py",),
      "the J_f·t term dropped"),
    M("cost_model.py", "return batch * int(2 * _primal(sizes) + _pass(sizes, acts))",
      "return batch * int(_primal(sizes) + _pass(sizes, acts))", ("test_cost_model.py",),
      "the δ⊗z outer products of the reverse gradient dropped"),
    # __init__.py
    M("__init__.py", "from fnn.derivatives import jacobian, value_and_grad",
      "from fnn.forward_mode import jacobian_forward as jacobian, gradient as value_and_grad",
      ("test_backprop.py",),
      "the public value_and_grad bound to the forward engine"),
)  # fmt: skip


def pytest(scratch: Path, tests, timeout: float) -> subprocess.CompletedProcess:
    """``pytest -x -q -m "not slow"`` on ``tests`` in the scratch copy (its own ``src``), with
    a persistent XLA compilation cache there: a mutant recompiles only what it changed."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               "-m", "not slow", *(f"tests/{t}" for t in tests)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        JAX_COMPILATION_CACHE_DIR=str(scratch / ".jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    return subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def run_one(mutation: Mutation, scratch: Path, timeout: float) -> dict:
    path = scratch / "src" / "fnn" / mutation.module
    original = path.read_text()
    count = original.count(mutation.old)
    if count != 1:
        return {"status": "not applied", "detail": f"'old' occurs {count} times", "seconds": 0.0}
    path.write_text(original.replace(mutation.old, mutation.new))
    start = time.perf_counter()
    try:
        proc = pytest(scratch, mutation.tests, timeout)
        status = "survived" if proc.returncode == 0 else "caught"
        lines = proc.stdout.strip().splitlines()
        detail = next((x for x in lines if x.startswith("FAILED") or x.startswith("ERROR")),
                      lines[-1] if lines else "")  # fmt: skip
    except subprocess.TimeoutExpired:
        status, detail = "caught (timeout)", f"over {timeout:.0f} s"
    finally:
        path.write_text(original)
    return {"status": status, "detail": detail[:200], "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated modules (e.g. cost_model,graph)")
    parser.add_argument("--list", action="store_true", help="print the mutations and stop")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args(argv)
    chosen = MUTATIONS
    if args.only:
        wanted = {m if m.endswith(".py") else f"{m}.py" for m in args.only.split(",")}
        chosen = tuple(m for m in MUTATIONS if m.module in wanted)
    if args.list or not chosen:
        for m in chosen:
            print(f"{m.module:<16} {m.bug}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fnn-mutants-") as tmp:
        scratch = Path(tmp)
        for part in ("src", "tests", "scripts", "benchmarks", "pyproject.toml"):
            source = ROOT / part
            if source.is_dir():
                skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
                shutil.copytree(source, scratch / part, ignore=skip)
            elif source.exists():
                shutil.copy2(source, scratch / part)
        tests = sorted({t for m in chosen for t in m.tests})
        start = time.perf_counter()
        baseline = pytest(scratch, tests, 30 * args.timeout)  # also fills the XLA cache
        print(f"baseline, no mutation: {baseline.stdout.strip().splitlines()[-1]} "
              f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
        if baseline.returncode != 0:
            print(baseline.stdout[-3000:], baseline.stderr[-2000:])
            raise SystemExit("the tests fail without a mutation: nothing to measure")
        print(f"{'module':<16} {'bug':<58} {'result':<16} {'s':>5}")
        for m in chosen:
            result = run_one(m, scratch, args.timeout)
            rows.append({**m._asdict(), **result})
            print(f"{m.module:<16} {m.bug[:58]:<58} {result['status']:<16} "
                  f"{result['seconds']:5.0f}", flush=True)  # fmt: skip
    applied = [r for r in rows if r["status"] != "not applied"]
    caught = sum(r["status"].startswith("caught") for r in applied)
    modules = sorted({r["module"] for r in applied})
    print(f"\ncaught {caught} of {len(applied)} planted bugs ({caught / max(len(applied), 1):.0%})"
          f" in {len(modules)} modules; survived: "
          f"{[r['bug'] for r in applied if r['status'] == 'survived']}")  # fmt: skip
    for r in rows:
        if r["status"] == "not applied":
            print(f"NOT APPLIED: {r['module']}: {r['bug']} ({r['detail']})")
    result = {"rows": rows, "caught": caught, "applied": len(applied), "modules": modules}
    (args.out / "planted_bugs.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out / 'planted_bugs.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
