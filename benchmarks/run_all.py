"""All of fnn's speed benchmarks in one run: a table of ratios, measured side by side (S22).

Every figure is a ratio of contenders timed in the same run: jitted, warmed up, alternating
their order every repetition, the median of ``--reps`` paired samples (``timing.py``). The
goals are fnn's performance targets (S22); the table marks the ones missed, and the notes
under it say, from the same run's measurements, where the limit is.

  reverse ÷ jax.value_and_grad     784-512-512-10, batch 256, float32 (relu and tanh)
  gradient ÷ forward loss          the cheap-gradient bound (same network)
  FLOP/s ÷ 1024³ jnp.dot           the gradient's 6·B·Σ D·M per second, batches 256…4096,
                                   and its matrix products alone (same shapes, nothing else)
  hand Jacobians ÷ jacfwd/jacrev   forward on a wide output, reverse on a wide input
  explicit ÷ reverse               the lecture's dense Jacobians: time and memory
  small step ÷ trivial call        32-64-64-1, batch 32: what is left is dispatch overhead
  compile time vs depth            gradient, apply, Jacobian at depth 2, 8, 32, 64

    python benchmarks/run_all.py            # about a minute and a half on 2 cores
    python benchmarks/run_all.py --quick    # seconds: small sizes, few repetitions
    python benchmarks/run_all.py --out DIR  # writes DIR/benchmarks.json (default results/)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "scripts")]

import bench_reverse  # noqa: E402
import compare_modes  # noqa: E402
import fnn  # noqa: E402
import timing  # noqa: E402
from fnn import backprop  # noqa: E402

F32 = jnp.float32
FULL = {
    "reps": 31,
    "sizes": (784, 512, 512, 10),
    "batch": 256,
    "flop_batches": (256, 1024, 4096),
    "jacobian_widths": (784, 256, 10),  # wide, hidden, narrow
    "explicit": ((64, 128, 128, 10), 64),
    "small": ((32, 64, 64, 1), 32),
    "depths": (2, 8, 32, 64),
    "compile_reps": 3,
}
QUICK = {
    **FULL,
    "reps": 5,
    "sizes": (64, 32, 32, 4),
    "batch": 16,
    "flop_batches": (16,),
    "jacobian_widths": (64, 32, 4),
    "explicit": ((16, 32, 32, 4), 8),
    "depths": (2, 8),
    "compile_reps": 1,
}


def row(name, value, goal=None, ok=None, detail="", **data):
    """One line of the table: ``value`` (a ratio) against ``goal``; ``data`` goes to JSON."""
    return {"name": name, "value": value, "goal": goal, "ok": ok, "detail": detail, **data}


def paired(name, samples, a, b, goal=None, test=None, detail="", **data):
    """A row for the ratio ``t_a / t_b`` of two interleaved contenders, with its noise."""
    r, noise = timing.ratio(samples, a, b), timing.spread(samples, a, b)
    ok = None if test is None else bool(test(r))
    return row(name, r, goal, ok, detail, spread=noise, **data)


def arch(sizes):
    return "-".join(map(str, sizes))


def gradient_flops(sizes, batch):
    """6·B·Σ D·M: forward Z Wᵀ, backward Δᵀ Z and Δ W, 2 flops per multiply-add each."""
    return 6 * batch * sum(D * M for D, M in itertools.pairwise(sizes))


# ---------------------------------------------------------------------------------------
# The gradient of 784-512-512-10: against jax.value_and_grad and against the forward loss.
# ---------------------------------------------------------------------------------------


def reverse_vs_jax(cfg):
    rows = []
    for hidden in ("relu", "tanh"):
        net, params, x, y = bench_reverse.setup(cfg["sizes"], cfg["batch"], hidden, F32, 0)
        loss_fn = fnn.losses.get("l2").fn
        fns = {
            **bench_reverse.candidates(net),
            "forward loss": jax.jit(
                lambda p, x, y, net=net, L=loss_fn: jnp.mean(jax.vmap(L)(fnn.apply(net, p, x), y))
            ),
        }
        s = timing.interleaved(fns, (params, x, y), cfg["reps"], 10e-3)
        ms = {k: 1e3 * timing.median(v) for k, v in s.items()}
        times = f"{ms['fnn reverse']:.2f} vs {ms['jax.value_and_grad']:.2f} ms"
        jax_over_loss = timing.ratio(s, "jax.value_and_grad", "forward loss")
        rows += [
            paired(
                f"reverse ÷ jax.value_and_grad ({hidden})",
                s,
                "fnn reverse",
                "jax.value_and_grad",
                "≤ 1.00",
                lambda r: r <= 1,
                times,
                ms=ms,
            ),
            paired(
                f"gradient ÷ forward loss ({hidden})",
                s,
                "fnn reverse",
                "forward loss",
                "≤ 3",
                lambda r: r <= 3,
                f"jax.value_and_grad: {jax_over_loss:.2f}",
            ),
        ]
    return rows


# ---------------------------------------------------------------------------------------
# Achieved FLOP/s against a large matmul, and against the gradient's own matrix products.
# ---------------------------------------------------------------------------------------


def matmuls_alone(params, X, G):
    """Exactly the gradient's matrix products, written as fnn writes them, and nothing else:
    forward ``Z Wᵀ``, backward ``Δᵀ Z`` and ``Δ W`` (Δ = the incoming rows)."""
    Zs = [X]
    for p in params:
        Zs.append(Zs[-1] @ p["W"].T)
    grads, D = [], G
    for p, Z in zip(reversed(params), reversed(Zs[:-1])):
        grads.append(D.T @ Z)
        D = D @ p["W"]
    return grads, D


def flop_rate(cfg):
    n, key = 1024, jax.random.key(1)
    A, B = jax.random.normal(key, (n, n), F32), jax.random.normal(key, (n, n), F32)
    dot, mm = jax.jit(jnp.dot), jax.jit(matmuls_alone)
    sizes, rows = cfg["sizes"], []
    for batch in cfg["flop_batches"]:
        net, params, x, y = bench_reverse.setup(sizes, batch, "relu", F32, 0)
        grad = bench_reverse.candidates(net)["fnn reverse"]
        G = jnp.ones((batch, sizes[-1]), F32)
        fns = {
            "gradient": lambda grad=grad, a=(params, x, y): grad(*a),
            "matmuls alone": lambda a=(params, x, G): mm(*a),
            "1024³ dot": lambda: dot(A, B),
        }
        s = timing.interleaved(fns, (), cfg["reps"], 20e-3)
        flops = gradient_flops(sizes, batch)
        per_dot_flop = flops / (2 * n**3)  # the gradient's flops in units of the dot's
        achieved = per_dot_flop * timing.ratio(s, "1024³ dot", "gradient")
        alone = per_dot_flop * timing.ratio(s, "1024³ dot", "matmuls alone")
        over = timing.ratio(s, "gradient", "matmuls alone")
        cost = grad.lower(params, x, y).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        gflops = {
            k: (2 * n**3 if k == "1024³ dot" else flops) / timing.median(v) / 1e9
            for k, v in s.items()
        }
        rows.append(
            row(
                f"gradient FLOP/s ÷ 1024³ dot FLOP/s (batch {batch})",
                achieved,
                "≥ 0.9",
                achieved >= 0.9,
                f"matmuls alone {alone:.2f}; gradient = {over:.2f}× its matmuls",
                spread=per_dot_flop * timing.spread(s, "1024³ dot", "gradient"),
                gflops=gflops,
                matmuls_alone_over_dot=alone,
                gradient_over_matmuls_alone=over,
                counted_flops=flops,
                xla_cost_analysis_flops=float(cost.get("flops", float("nan"))),
            )
        )
    # The two kinds of product in the backward pass, same shape and flops as the forward's.
    batch, (D, M) = cfg["batch"], sizes[:2]
    X, W = jax.random.normal(key, (batch, D), F32), jax.random.normal(key, (M, D), F32)
    Delta = jax.random.normal(key, (batch, M), F32)
    products = {
        "Z Wᵀ": jax.jit(lambda X, W, Delta: X @ W.T),
        "Δ W": jax.jit(lambda X, W, Delta: Delta @ W),
        "Δᵀ Z": jax.jit(lambda X, W, Delta: Delta.T @ X),
        "Δᵀ written out, × Z": jax.jit(
            lambda X, W, Delta: jax.lax.optimization_barrier(Delta.T) @ X
        ),
    }
    s = timing.interleaved(products, (X, W, Delta), cfg["reps"], 10e-3)
    kinds = {k: compiled_root(f, X, W, Delta) for k, f in products.items()}
    for name in ("Δ W", "Δᵀ Z", "Δᵀ written out, × Z"):
        rows.append(
            paired(
                f"product {name} ÷ forward Z Wᵀ (B={batch}, D={D}, M={M})",
                s,
                name,
                "Z Wᵀ",
                detail=f"same flops; {xla()} runs it as {kinds[name]} (Z Wᵀ: {kinds['Z Wᵀ']})",
                compiled_as=kinds[name],
            )
        )
    return rows


def xla() -> str:
    return f"XLA:{jax.default_backend().upper()}"


def compiled_root(f, *args) -> str:
    """What XLA made of a one-product function: the root instruction of the compiled
    program (``dot`` for the generic dot, ``ynn_fusion`` for a YNNPACK fusion, …)."""
    hlo = f.lower(*args).compile().as_text()
    root = next(line for line in hlo[hlo.index("ENTRY") :].splitlines() if "ROOT" in line)
    name, op = root.split("=")[0].split()[-1].lstrip("%"), root.split("=")[1].split("(")[0]
    op = op.split()[-1]
    return name.rstrip(".0123456789") if op == "fusion" else op


# ---------------------------------------------------------------------------------------
# Hand Jacobians against JAX's, on the shape each mode suits (compare_modes' contenders).
# ---------------------------------------------------------------------------------------


def jacobians(cfg):
    wide, hidden, narrow = cfg["jacobian_widths"]
    rows = []
    for mode, witness, sizes in (
        ("fwd", "jacfwd", (narrow, hidden, hidden, wide)),
        ("rev", "jacrev", (wide, hidden, hidden, narrow)),
    ):
        net = fnn.MLP(sizes, ("tanh", "tanh", "identity"))
        params = fnn.init(jax.random.key(0), net, dtype=F32)
        x = jax.random.normal(jax.random.key(1), (sizes[0],), F32)
        every = compare_modes.contenders(net, with_central=False)
        s = timing.interleaved(
            {k: every[k] for k in (mode, witness)}, (params, x), cfg["reps"], 20e-3
        )
        us = {k: 1e6 * timing.median(v) for k, v in s.items()}
        name = f"jacobian {'forward' if mode == 'fwd' else 'reverse'} ÷ jax.{witness}"
        detail = f"{arch(sizes)}: {us[mode]:.0f} vs {us[witness]:.0f} µs"
        rows.append(paired(name, s, mode, witness, "≤ 1.00", lambda r: r <= 1, detail, us=us))
    return rows


# ---------------------------------------------------------------------------------------
# The lecture's explicit engine against the structured one: time and memory.
# ---------------------------------------------------------------------------------------


def explicit_vs_reverse(cfg):
    sizes, batch = cfg["explicit"]
    net, params, x, y = bench_reverse.setup(sizes, batch, "relu", F32, 0)
    fns = {
        m: jax.jit(lambda p, x, y, m=m: fnn.value_and_grad(net, p, x, y, method=m))
        for m in ("explicit", "reverse")
    }
    s = timing.interleaved(fns, (params, x, y), cfg["reps"])
    temp = {m: f.lower(params, x, y).compile().memory_analysis() for m, f in fns.items()}
    mib = {m: t.temp_size_in_bytes / 2**20 for m, t in temp.items() if t is not None}
    estimate = backprop.explicit_bytes(net, batch, F32) / 2**20
    return [
        paired(f"explicit ÷ reverse ({arch(sizes)}, batch {batch})", s, *fns),
        row(
            "explicit ÷ reverse, peak temporary memory",
            mib["explicit"] / mib["reverse"] if len(mib) == 2 else None,
            detail=(
                f"{mib.get('explicit', float('nan')):.2f} vs {mib.get('reverse', float('nan')):.3f}"
                f" MiB (explicit_bytes: {estimate:.1f} MiB)"
            ),
            temp_mib=mib,
            explicit_bytes_mib=estimate,
        ),
    ]


# ---------------------------------------------------------------------------------------
# A small network: how close a jitted training step comes to a trivial jitted call.
# ---------------------------------------------------------------------------------------


def sgd(params, grads, lr=1e-2):
    return jax.tree.map(lambda p, g: p - lr * g, params, grads)


def torch_step_fn(sizes, batch):
    """A PyTorch eager SGD step of the same network, or None when torch is not importable."""
    try:
        import torch
    except ImportError:
        return None
    layers = []
    for D, M in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(D, M), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = torch.randn(batch, sizes[0]), torch.randn(batch, sizes[-1])

    def step():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).sum(dim=1).mean()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def small_step(cfg):
    sizes, batch = cfg["small"]
    net, params, x, y = bench_reverse.setup(sizes, batch, "tanh", F32, 0)

    def fnn_step(p, x, y):
        loss, grads = fnn.value_and_grad(net, p, x, y)
        return loss, sgd(p, grads["params"])

    def jax_step(p, x, y):
        def L(p):
            return jnp.mean(jnp.sum((fnn.apply(net, p, x) - y) ** 2, axis=-1))

        loss, grads = jax.value_and_grad(L)(p)
        return loss, sgd(p, grads)

    fns = {
        "fnn step": jax.jit(fnn_step),
        "jax step": jax.jit(jax_step),
        "trivial call": jax.jit(lambda p, x, y: y + 1),  # same arguments, no work
    }
    s = timing.interleaved(fns, (params, x, y), cfg["reps"])
    us = {k: 1e6 * timing.median(v) for k, v in s.items()}
    rows = [
        paired(
            f"small step ÷ trivial jitted call ({arch(sizes)}, batch {batch})",
            s,
            "fnn step",
            "trivial call",
            detail=f"{us['fnn step']:.1f} vs {us['trivial call']:.1f} µs per call",
            us=us,
        ),
        paired("small step: fnn ÷ jax.value_and_grad step", s, "fnn step", "jax step"),
    ]
    torch_step = torch_step_fn(sizes, batch)
    if torch_step is None:
        rows.append(
            row("small step: fnn ÷ PyTorch eager step", None, detail="torch not importable")
        )
    else:  # in its own block, after the others: PyTorch's OpenMP threads spin after each op
        us["torch eager step"] = 1e6 * timing.median(
            timing.blocks({"torch": torch_step}, (), cfg["reps"])["torch"]
        )
        rows.append(
            row(
                "small step: fnn ÷ PyTorch eager step",
                us["fnn step"] / us["torch eager step"],
                detail=f"{us['torch eager step']:.1f} µs per torch step (timed in a block)",
            )
        )
    return rows


# ---------------------------------------------------------------------------------------
# Compile time against depth: runs of identical layers are scanned (MLP.scan_min_layers).
# ---------------------------------------------------------------------------------------

COMPILE_VARIANTS = {  # name: (engine, MLP's static scan fields); {} is the default policy
    "gradient": ("grad", {}),
    "gradient, per-layer results scanned": ("grad", {"scan_per_layer_results": True}),
    "apply": ("apply", {}),
    "apply, unrolled": ("apply", {"scan_min_layers": None}),
    "jacobian reverse": ("jac", {}),
    "jacobian reverse, unrolled": ("jac", {"scan_min_layers": None}),
}


def compile_times(cfg, width=128, batch=32):
    """Seconds to trace, lower and compile at every depth (the number of weight matrices,
    every hidden layer ``width`` wide), by the default policy and by the other one."""
    engines = {
        "grad": lambda net, y: lambda p, x: fnn.value_and_grad(net, p, x, y),
        "apply": lambda net, y: lambda p, x: fnn.apply(net, p, x),
        "jac": lambda net, y: lambda p, x: fnn.jacobian(net, p, x[0], method="reverse"),
    }
    ms = {v: {} for v in COMPILE_VARIANTS}
    for depth in cfg["depths"]:
        sizes = (width,) * depth + (10,)
        acts = ("tanh",) * (depth - 1) + ("identity",)
        params = fnn.init(jax.random.key(0), fnn.MLP(sizes, acts), dtype=F32)
        x, y = jnp.ones((batch, width), F32), jnp.ones((batch, 10), F32)
        for variant, (engine, fields) in COMPILE_VARIANTS.items():
            net = fnn.MLP(sizes, acts, **fields)
            make = lambda e=engines[engine], net=net, y=y: e(net, y)  # noqa: E731
            ms[variant][depth] = 1e3 * timing.compile_seconds(
                make, (params, x), cfg["compile_reps"]
            )
    lo, hi = min(cfg["depths"]), max(cfg["depths"])
    rows = []
    for variant, by_depth in ms.items():
        r = by_depth[hi] / by_depth[lo]
        goal = variant == "gradient"
        detail = ", ".join(f"{d}: {t:.0f}" for d, t in by_depth.items()) + " ms"
        rows.append(
            row(
                f"compile {variant}: depth {hi} ÷ {lo}",
                r,
                "≤ 2" if goal else None,
                r <= 2 if goal else None,
                detail,
                ms=by_depth,
            )
        )
    return rows


# ---------------------------------------------------------------------------------------
# Reading the results: the table and, where a goal is missed, where the limit is.
# ---------------------------------------------------------------------------------------


def notes(rows):
    """What the same run's measurements say about each missed goal."""
    by = {r["name"]: r for r in rows}
    out = []
    flop = [r for r in rows if r["name"].startswith("gradient FLOP/s")]
    if any(r["ok"] is False for r in flop):
        product = next((v for k, v in by.items() if k.startswith("product Δᵀ Z")), None)
        written = next(v for k, v in by.items() if k.startswith("product Δᵀ written out"))
        per_batch = "; ".join(
            f"{r['name'].split('(')[-1][:-1]}: gradient {r['value']:.2f}, its products alone "
            f"{r['matmuls_alone_over_dot']:.2f}, gradient = {r['gradient_over_matmuls_alone']:.2f}"
            "× their time"
            for r in flop
        )
        out.append(
            "FLOP/s (of the 1024³ dot's): "
            + per_batch
            + ". The limit is the products themselves: the same shapes with nothing else "
            "around them do no better (where the gradient takes longer than its products, at "
            "large batches, the rest is the elementwise passes over (B, M) arrays that no "
            "longer fit in cache)"
            + (
                f"; of them, ∂L/∂W = Δᵀ Z, contracted over the batch axis, compiles to "
                f"{product['compiled_as']} and takes {product['value']:.2f}× the time of the "
                f"forward Z Wᵀ ({written['value']:.2f}× with Δᵀ written out first by an "
                "optimization barrier; fnn and jax.value_and_grad keep the folded form)."
                if product
                else "."
            )
        )
    if any(r["name"].startswith("gradient ÷ forward loss") and r["ok"] is False for r in rows):
        out.append(
            "gradient ÷ loss: the result includes ∂L/∂x, so the gradient does exactly 3× the "
            "forward pass's matrix flops (6·B·Σ D·M vs 2·B·Σ D·M); anything above 3 is the "
            "backward products' lower rate (the 'product' rows), as for jax.value_and_grad."
        )
    scanned = next((r for r in rows if "per-layer results scanned" in r["name"]), None)
    grad = next((r for r in rows if r["name"].startswith("compile gradient:")), None)
    if grad and grad["ok"] is False and scanned:
        out.append(
            f"compile: scanning the reverse engine would make it {scanned['value']:.1f}× "
            f"(every per-layer gradient sliced out of the stacked result is one more {xla()} "
            f"kernel to compile), so per-layer results stay unrolled, where {xla()} compiles "
            "identical layers once; what still grows with depth is tracing, lowering and the "
            "HLO passes, linear in the number of operations."
        )
    return out


def fmt(r):
    if r["value"] is None:
        return f"{'—':>15}"
    noise = f"±{r['spread']:.2f}" if "spread" in r else ""
    return f"{r['value']:8.3f}{noise:>6}×"


def print_table(rows, lines):
    print(f"\n{'benchmark':62} {'measured':>15} {'goal':>7} {'verdict':8} detail")
    for r in rows:
        verdict = {True: "met", False: "NOT met", None: ""}[r["ok"]]
        print(f"{r['name']:62} {fmt(r)} {r['goal'] or '':>7} {verdict:8} {r['detail']}")
    if lines:
        print("\nWhere the limits are:\n" + "\n".join(f"  - {line}" for line in lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--reps", type=int, help="paired samples per ratio (default 31)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.reps:
        cfg["reps"] = args.reps
    device = jax.devices()[0]
    print(
        f"fnn benchmarks: {device.platform} ({device.device_kind}), {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}, load average {os.getloadavg()[0]:.2f}; medians of "
        f"{cfg['reps']} interleaved repetitions (noisy on a shared machine)."
    )
    start, load_start = time.perf_counter(), os.getloadavg()
    sections = {
        "reverse_vs_jax": reverse_vs_jax,
        "flop_rate": flop_rate,
        "jacobians": jacobians,
        "explicit_vs_reverse": explicit_vs_reverse,
        "small_step": small_step,
        "compile_times": compile_times,  # last: it clears JAX's caches
    }
    results = {}
    for name, section in sections.items():
        t0 = time.perf_counter()
        results[name] = section(cfg)
        print(f"  {name:22} {time.perf_counter() - t0:6.1f} s", flush=True)
    rows = [r for section_rows in results.values() for r in section_rows]
    lines = notes(rows)
    print_table(rows, lines)

    result = {
        "config": {"quick": args.quick, **cfg},
        "machine": {
            "platform": device.platform,
            "device": device.device_kind,
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "jax": jax.__version__,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "rows": rows,
        "notes": lines,
        "seconds": time.perf_counter() - start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "benchmarks.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nWrote {path} in {result['seconds']:.1f} s.")
    return result


if __name__ == "__main__":
    main()
