"""Sum over all paths vs dynamic programming on computation graphs (S12, S13).

First the lecture's graph s → x, y, z → f → g, h → L: its six paths, each a product of
local partial derivatives, and ∂L/∂s three ways (path sum, forward accumulation, backward
accumulation) next to jax.grad. Then layered graphs s → d layers of width w → L: the
number of paths grows as w^d, the operations of the path sum with it, while both dynamic
programs need one multiplication per edge — every operation counted as it is performed.

  python scripts/path_explosion.py                # width 3, depth 1 … 12
  python scripts/path_explosion.py --quick        # width 3, depth 1 … 6
  python scripts/path_explosion.py --width 4 --depth 10 --max-paths 1e6

Writes ``results/path_explosion.json`` and ``results/path_explosion.png`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import time
from pathlib import Path

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fnn import graph

jax.config.update("jax_enable_x64", True)


def labels(g, s):
    """The edge labels ∂child/∂parent of the forward pass at s, as Python floats."""
    return {e: float(d) for e, d in graph.local_partials(g, graph.evaluate(g, s)).items()}


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def lecture(s):
    g = graph.lecture_graph()
    edge = labels(g, s)
    print(f"The lecture's graph s → x, y, z → f → g, h → L at s = {s}:")
    terms = []
    for path in graph.paths(g):
        steps = list(itertools.pairwise(path))  # (parent, child)
        terms.append(float(np.prod([edge[c, p] for p, c in steps])))
        names = " · ".join(f"∂{c}/∂{p}" for p, c in reversed(steps))
        print(f"  {' → '.join(path):<18} {names:<34} = {terms[-1]:+.6f}")
    paths = graph.sum_over_paths(g, edge)
    forward = graph.forward_accumulation(g, edge)
    backward = graph.backward_accumulation(g, edge)
    witness = float(jax.grad(lambda s: graph.evaluate(g, s)[g.output])(s))
    print(f"  {'sum over the paths':<26} {paths.derivative:+.15f}   {paths.ops}")
    print(f"  {'forward accumulation':<26} {forward.derivatives['L']:+.15f}   {forward.ops}")
    print(f"  {'backward accumulation':<26} {backward.derivatives['s']:+.15f}   {backward.ops}")
    print(f"  {'jax.grad':<26} {witness:+.15f}")
    return {
        "s": s,
        "num_paths": paths.num_paths,
        "paths": [list(p) for p in graph.paths(g)],
        "terms": terms,
        "path_sum": paths.derivative,
        "forward": forward.derivatives["L"],
        "backward": backward.derivatives["s"],
        "jax_grad": witness,
        "ops": {
            "path_sum": vars(paths.ops),
            "forward": vars(forward.ops),
            "backward": vars(backward.ops),
        },
    }


def layered(width, depths, max_paths, s, seed):
    rows = []
    for depth in depths:
        g = graph.layered_graph(depth, width, seed)
        edge = labels(g, s)
        forward, t_forward = timed(graph.forward_accumulation, g, edge)
        backward, t_backward = timed(graph.backward_accumulation, g, edge)
        num_paths = graph.count_paths(g)
        row = {
            "depth": depth,
            "num_paths": num_paths,
            "num_edges": g.num_edges,
            "forward_ops": forward.ops.total,
            "backward_ops": backward.ops.total,
            "forward_seconds": t_forward,
            "backward_seconds": t_backward,
            "path_sum_ops": None,
            "path_sum_seconds": None,
            "agree": None,
            "derivative": backward.derivatives["s"],
        }
        if num_paths <= max_paths:
            sum_over_paths = functools.partial(graph.sum_over_paths, max_paths=int(max_paths))
            paths, t_paths = timed(sum_over_paths, g, edge)
            # Σ over paths of |product|: the scale of the rounding of any order of summation.
            absolute = {e: abs(d) for e, d in edge.items()}
            scale = graph.forward_accumulation(g, absolute).derivatives["L"]
            results = (paths.derivative, forward.derivatives["L"], backward.derivatives["s"])
            row.update(
                path_sum_ops=paths.ops.total,
                path_sum_seconds=t_paths,
                agree=bool(np.ptp(results) <= 64 * np.finfo(float).eps * scale),
            )
        rows.append(row)
    return rows


def print_rows(rows, width):
    print(f"\nLayered graphs of width {width}: s → depth × {width} nodes → L (ops = × and +)")
    print(f"{'depth':>5} {'paths':>10} {'edges':>6} {'path-sum ops':>13} {'forward ops':>12} "
          f"{'backward ops':>13} {'path-sum s':>11} {'backward s':>11} agree")  # fmt: skip
    for r in rows:
        counted = r["path_sum_ops"] is not None
        ops = f"{r['path_sum_ops']:13d}" if counted else f"{'(skipped)':>13}"
        secs = f"{r['path_sum_seconds']:11.2e}" if counted else f"{'':>11}"
        agree = {True: "yes", False: "NO", None: ""}[r["agree"]]
        print(
            f"{r['depth']:5d} {r['num_paths']:10d} {r['num_edges']:6d} {ops} "
            f"{r['forward_ops']:12d} {r['backward_ops']:13d} {secs} "
            f"{r['backward_seconds']:11.2e} {agree}"
        )
    print("(path counts by dynamic programming; the path sum enumerated up to --max-paths)")


def plot(rows, width, path):
    depth = [r["depth"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.semilogy(depth, [r["num_paths"] for r in rows], "k--", label=f"paths = {width}^d")
    counted = [r for r in rows if r["path_sum_ops"] is not None]
    ax.semilogy([r["depth"] for r in counted], [r["path_sum_ops"] for r in counted], "o-",
                label="sum over all paths: operations")  # fmt: skip
    ax.semilogy(depth, [r["forward_ops"] for r in rows], "s-", label="forward accumulation")
    ax.semilogy(depth, [r["backward_ops"] for r in rows], "^:", label="backward accumulation")
    ax.set(xlabel="depth d (layers of width w)", ylabel="count (log scale)")
    ax.set_title(f"Derivatives on a layered graph of width {width}: counted operations")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="depth 1 … 6")
    parser.add_argument("--width", type=int, default=3)
    parser.add_argument("--depth", type=int, default=12, help="the largest depth")
    parser.add_argument("--max-paths", type=float, default=2e5, help="enumerate up to this")
    parser.add_argument("--s", type=float, default=0.5, help="the input value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    result = {"lecture": lecture(args.s)}
    depths = range(1, (6 if args.quick else args.depth) + 1)
    rows = layered(args.width, depths, args.max_paths, args.s, args.seed)
    print_rows(rows, args.width)
    plot(rows, args.width, args.out / "path_explosion.png")
    result.update(width=args.width, quick=args.quick, rows=rows)
    (args.out / "path_explosion.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out / 'path_explosion.json'} and {args.out / 'path_explosion.png'}")
    return 0 if all(r["agree"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
