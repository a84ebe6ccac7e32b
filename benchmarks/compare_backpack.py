"""fnn beside BackPACK and Opacus: every quantity both compute, on the same weights (S24, S28).

  fnn.hessian_diagonal              BackPACK DiagHessian
  fnn.ggn_diagonal                  BackPACK DiagGGNExact
  fnn.ggn_diagonal(mc_samples=1)    BackPACK DiagGGNMC
  fnn.kfac_factors                  BackPACK KFLR   (exact G)
  fnn.kfac_factors(mc_samples=1)    BackPACK KFAC   (sampled G)
  fnn.per_example_grads             BackPACK BatchGrad
  fnn.per_example_grad_norms        BackPACK BatchL2Grad
  fnn.per_example_ggn_diagonal      BackPACK BatchDiagGGNExact
  fnn.per_example_hessian_diagonal  BackPACK BatchDiagHessian
  fnn.clipped_grad                  Opacus DPOptimizer's clipped step (noise 0)

Numbers, float64: the max relative difference ``max |fnn − torch| / max |torch|`` per
quantity (BackPACK's mean-reduced per-example quantities carry the 1/B that fnn's per-example
ones do not; Opacus divides by ``‖g_b‖ + 1e-6``, fnn by ``‖g_b‖``). A Monte-Carlo row compares
each library's mean over ``--draws`` draws with the exact value instead.
Times, float32: each library timed in its own block — every fnn call first, then every
PyTorch call (PyTorch's OpenMP threads spin after each call and slow a JAX call right
after) — median seconds of ``--reps`` calls, and each quantity ÷ one gradient of its own
library; also ``fnn.hvp`` ÷ ``jax.jvp(jax.grad)``.

    python benchmarks/compare_backpack.py            # small: 20-16-16-5, batch 8, seconds
    python benchmarks/compare_backpack.py --full     # 784-512-512-10 tanh, batch 256

Writes ``results/compare_backpack.{md,json}``. Needs the ``compare`` extra (torch,
backpack-for-pytorch, opacus): ``make compare``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnn

LOSS = "softmax_cross_entropy"
SMALL = {"sizes": (20, 16, 16, 5), "batch": 8, "reps": 5}
FULL = {"sizes": (784, 512, 512, 10), "batch": 256, "reps": 7}
MAX_NORM = 1.0
MC_ROWS = ("ggn_diagonal mc", "kfac_factors mc")


def problem(sizes, batch, dtype, seed=0):
    """A tanh network with softmax cross-entropy, its parameters, inputs and labels."""
    net = fnn.MLP(sizes, ("tanh",) * (len(sizes) - 2) + ("identity",))
    k = jax.random.split(jax.random.key(seed), 3)
    params = fnn.init(k[0], net, dtype=dtype)
    x = jax.random.normal(k[1], (batch, sizes[0]), dtype)
    y = jax.random.randint(k[2], (batch,), 0, sizes[-1])
    return net, params, x, y


# ---------------------------------------------------------------------------------------
# fnn's side: each quantity as a list of arrays in torch's order (weight, bias per layer).
# ---------------------------------------------------------------------------------------


def _layers(tree):
    return [t for p in tree for t in (p["W"], p["b"])]


def _kfac(factors):  # BackPACK: weight [G, A] (A without the bias row), bias [G]
    return [t for f in factors for t in (f["G"], f["A"][1:, 1:], f["G"])]


# B diagonals of P numbers: 686 MB at the full size in float32, over the default limit.
EACH = {"max_bytes": 2**33}
# fnn's name → (BackPACK's or Opacus's name, fnn's function, its options, its arrays in
# torch's order).
ROWS = {
    "hessian_diagonal": ("DiagHessian", "hessian_diagonal", {}, _layers),
    "ggn_diagonal": ("DiagGGNExact", "ggn_diagonal", {}, _layers),
    "ggn_diagonal mc": ("DiagGGNMC", "ggn_diagonal", {"mc_samples": 1}, _layers),
    "kfac_factors": ("KFLR", "kfac_factors", {}, _kfac),
    "kfac_factors mc": ("KFAC", "kfac_factors", {"mc_samples": 1}, _kfac),
    "per_example_grads": ("BatchGrad", "per_example_grads", {}, lambda r: _layers(r[1])),
    "per_example_grad_norms": ("BatchL2Grad", "per_example_grad_norms", {}, lambda r: [r]),
    "per_example_ggn_diagonal": ("BatchDiagGGNExact", "per_example_ggn_diagonal", EACH, _layers),
    "per_example_hessian_diagonal": (
        "BatchDiagHessian", "per_example_hessian_diagonal", EACH, _layers,
    ),
    "clipped_grad": (
        "Opacus clipped step", "clipped_grad", {"max_norm": MAX_NORM}, lambda r: _layers(r[1]),
    ),
}  # fmt: skip


def fnn_rows(net):
    """name → (the other library's name, ``f(params, x, y, key)`` giving fnn's arrays in
    torch's order)."""

    def row(fn_name, options, order):
        f, mc = getattr(fnn, fn_name), "mc_samples" in options

        def run(p, x, y, key):
            extra = {"key": key} if mc else {}
            return order(f(net, p, x, y, loss=LOSS, **options, **extra))

        return run

    return {name: (other, row(*rest)) for name, (other, *rest) in ROWS.items()}


def fnn_baselines(net):
    """One gradient, and the two Hessian-vector products."""
    loss_fn = fnn.losses.get(LOSS).fn

    def batch_loss(p, x, y):
        return jnp.mean(jax.vmap(loss_fn)(fnn.apply(net, p, x), y))

    return {
        "gradient": lambda p, x, y, k: fnn.value_and_grad(net, p, x, y, loss=LOSS),
        "hvp": lambda p, x, y, k: fnn.hvp(net, p, x, y, p, loss=LOSS),
        "jax.jvp(jax.grad)": lambda p, x, y, k: jax.jvp(
            lambda q: jax.grad(batch_loss)(q, x, y), (p,), (p,)
        )[1],
    }


# ---------------------------------------------------------------------------------------
# PyTorch's side: the same network, BackPACK's extensions and Opacus's clipping.
# ---------------------------------------------------------------------------------------


class Torch:
    """The same weights in ``torch.nn.Sequential``, extended by BackPACK, and Opacus."""

    def __init__(self, net, params, x, y):
        import torch
        from backpack import extend

        self.torch = torch
        self.model = extend(self._sequential(net, params))
        self.loss = extend(torch.nn.CrossEntropyLoss(reduction="mean"))
        self.x, self.y = torch.tensor(np.array(x)), torch.tensor(np.array(y)).long()
        # Opacus gets its own copy: its hooks would otherwise store per-example gradients
        # during every BackPACK call too (and BackPACK's would run in Opacus's).
        self._opacus(self._sequential(net, params))

    def _sequential(self, net, params):
        layers = []
        for i, p in enumerate(params):
            linear = self.torch.nn.Linear(p["W"].shape[1], p["W"].shape[0])
            linear.weight.data = self.torch.tensor(np.array(p["W"]))
            linear.bias.data = self.torch.tensor(np.array(p["b"]))
            layers += [linear] + ([self.torch.nn.Tanh()] if i < net.num_layers - 1 else [])
        return self.torch.nn.Sequential(*layers)

    def _opacus(self, model):
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        self.gsm = GradSampleModule(model, loss_reduction="mean")
        sgd = self.torch.optim.SGD(self.gsm.parameters(), lr=0.0)
        self.dp = DPOptimizer(sgd, noise_multiplier=0.0, max_grad_norm=MAX_NORM,
                              expected_batch_size=self.x.shape[0])  # fmt: skip

    def extension(self, name):
        """BackPACK's quantity ``name`` as arrays in torch's order."""
        import backpack.extensions as ext
        from backpack import backpack

        make, attr = {
            "DiagHessian": (ext.DiagHessian, "diag_h"),
            "DiagGGNExact": (ext.DiagGGNExact, "diag_ggn_exact"),
            "DiagGGNMC": (lambda: ext.DiagGGNMC(mc_samples=1), "diag_ggn_mc"),
            "KFLR": (ext.KFLR, "kflr"),
            "KFAC": (lambda: ext.KFAC(mc_samples=1), "kfac"),
            "BatchGrad": (ext.BatchGrad, "grad_batch"),
            "BatchL2Grad": (ext.BatchL2Grad, "batch_l2"),
            "BatchDiagGGNExact": (ext.BatchDiagGGNExact, "diag_ggn_exact_batch"),
            "BatchDiagHessian": (ext.BatchDiagHessian, "diag_h_batch"),
        }[name]
        self.model.zero_grad()
        with backpack(make()):
            self.loss(self.model(self.x), self.y).backward()
        out = [getattr(p, attr) for p in self.model.parameters()]
        return [t for o in out for t in (o if isinstance(o, list) else [o])]

    def gradient(self):
        self.model.zero_grad()
        self.loss(self.model(self.x), self.y).backward()
        return [p.grad for p in self.model.parameters()]

    def clipped_step(self):
        """Opacus's clipped mean gradient (noise 0): the ``p.grad`` its step would apply."""
        self.dp.zero_grad()
        self.loss(self.gsm(self.x), self.y).backward()
        self.dp.pre_step()
        return [p.grad for p in self.gsm.parameters()]

    def run(self, name):
        if name == "Opacus clipped step":
            return self.clipped_step()
        return self.extension(name)


def torch_as_fnn(name, arrays, B):
    """BackPACK's mean reduction scales per-example quantities by 1/B (squared norms by
    1/B²): undone here, so both sides hold each example's own quantity."""
    a = [np.asarray(t.detach().numpy() if hasattr(t, "detach") else t) for t in arrays]
    if name in ("BatchGrad", "BatchDiagGGNExact", "BatchDiagHessian"):
        return [B * t for t in a]
    if name == "BatchL2Grad":
        return [B * np.sqrt(sum(a))]
    return a


# ---------------------------------------------------------------------------------------
# Numbers (float64) and times (float32).
# ---------------------------------------------------------------------------------------


def rel_diff(a, b) -> float:
    a = np.concatenate([np.ravel(t) for t in a])
    b = np.concatenate([np.ravel(t) for t in b])
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), np.finfo(b.dtype).tiny))


def numbers(sizes, batch, draws, seed=0):
    """float64: the max relative difference of every row; a Monte-Carlo row: each library's
    mean over ``draws`` draws against the exact value."""
    import torch

    torch.set_default_dtype(torch.float64)
    net, params, x, y = problem(sizes, batch, jnp.float64, seed)
    side = Torch(net, params, x, y)
    rows, out = fnn_rows(net), {}
    exact = {"ggn_diagonal mc": "ggn_diagonal", "kfac_factors mc": "kfac_factors"}
    for name, (bp_name, f) in rows.items():
        fn = jax.jit(f)
        if name in MC_ROWS:
            keys = jax.random.split(jax.random.key(seed), draws)
            mean_fnn = [np.mean(t, 0) for t in jax.vmap(lambda k, fn=fn: fn(params, x, y, k))(keys)]
            torch.manual_seed(seed)
            runs = [torch_as_fnn(bp_name, side.run(bp_name), batch) for _ in range(draws)]
            mean_torch = [np.mean(t, 0) for t in zip(*runs)]
            truth = [np.asarray(t) for t in rows[exact[name]][1](params, x, y, None)]
            out[name] = {
                "fnn_mean_vs_exact": rel_diff(mean_fnn, truth),
                "backpack_mean_vs_exact": rel_diff(mean_torch, truth),
                "draws": draws,
            }
            continue
        mine = [np.asarray(t) for t in fn(params, x, y, jax.random.key(seed))]
        theirs = torch_as_fnn(bp_name, side.run(bp_name), batch)
        out[name] = {"max_rel_diff": rel_diff(mine, theirs)}
    torch.set_default_dtype(torch.float32)
    return out


def _median_seconds(call, reps):
    call()  # warm-up: compile, caches
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timings(sizes, batch, reps, seed=0):
    """float32 seconds per call: the fnn block, then the PyTorch block."""
    import torch

    net, params, x, y = problem(sizes, batch, jnp.float32, seed)
    key = jax.random.key(seed)
    fnn_s = {}
    for name, f in {**fnn_baselines(net), **{n: f for n, (_, f) in fnn_rows(net).items()}}.items():
        fn = jax.jit(f)
        fnn_s[name] = _median_seconds(
            lambda fn=fn: jax.block_until_ready(fn(params, x, y, key)), reps
        )
    side = Torch(net, params, x, y)
    torch_s = {"gradient": _median_seconds(side.gradient, reps)}
    for bp_name, _ in fnn_rows(net).values():
        torch.manual_seed(seed)
        torch_s[bp_name] = _median_seconds(lambda b=bp_name: side.run(b), reps)
    return fnn_s, torch_s


def table(config, nums, fnn_s, torch_s) -> tuple[str, dict]:
    """The Markdown table and the JSON rows."""
    rows, lines = (
        [],
        [
            "| fnn | BackPACK / Opacus | float64 max rel. diff | fnn ms | torch ms | fnn ÷ torch "
            "| fnn ÷ fnn gradient | torch ÷ torch gradient |",
            "|---|---|---|---|---|---|---|---|",
        ],
    )
    for name, (bp_name, *_) in ROWS.items():
        n = nums.get(name, {}) if nums else {}
        check = (
            f"{n['max_rel_diff']:.1e}" if "max_rel_diff" in n
            else f"means of {n['draws']} draws vs exact: fnn {n['fnn_mean_vs_exact']:.1e}, "
            f"BackPACK {n['backpack_mean_vs_exact']:.1e}" if n else "—"
        )  # fmt: skip
        row = {"fnn": name, "torch": bp_name, "numbers": n}
        cells = [f"`{name}`", bp_name, check]
        if fnn_s:
            f, t = fnn_s[name], torch_s[bp_name]
            row.update(fnn_s=f, torch_s=t, ratio=f / t, fnn_over_gradient=f / fnn_s["gradient"],
                       torch_over_gradient=t / torch_s["gradient"])  # fmt: skip
            cells += [f"{1e3 * f:.2f}", f"{1e3 * t:.2f}", f"{f / t:.2f}",
                      f"{f / fnn_s['gradient']:.1f}", f"{t / torch_s['gradient']:.1f}"]  # fmt: skip
        else:
            cells += ["—"] * 5
        rows.append(row)
        lines.append("| " + " | ".join(cells) + " |")
    if fnn_s:
        lines.append(
            f"\n`fnn.hvp` ÷ `jax.jvp(jax.grad)` = {fnn_s['hvp'] / fnn_s['jax.jvp(jax.grad)']:.2f}; "
            f"one gradient: fnn {1e3 * fnn_s['gradient']:.2f} ms, torch "
            f"{1e3 * torch_s['gradient']:.2f} ms."
        )
    return "\n".join(lines), rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="784-512-512-10, batch 256")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per quantity")
    parser.add_argument("--draws", type=int, default=200, help="Monte-Carlo draws (numbers)")
    parser.add_argument("--no-numbers", action="store_true", help="skip the float64 check")
    parser.add_argument("--no-timing", action="store_true", help="skip the float32 timing")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args(argv)
    config = dict(FULL if args.full else SMALL)
    config["reps"] = args.reps or config["reps"]
    jax.config.update("jax_enable_x64", True)  # float64 for the numbers; float32 arrays stay
    warnings.filterwarnings("ignore", module="torch|opacus|backpack")
    start = time.perf_counter()
    nums = None if args.no_numbers else numbers(config["sizes"], config["batch"], args.draws)
    fnn_s, torch_s = (None, None) if args.no_timing else timings(
        config["sizes"], config["batch"], config["reps"]
    )  # fmt: skip
    markdown, rows = table(config, nums, fnn_s, torch_s)
    import torch

    header = (
        f"{'-'.join(map(str, config['sizes']))} tanh, batch {config['batch']}, {LOSS}; "
        f"numbers {'not run' if nums is None else 'float64'}, times "
        f"{'not run' if fnn_s is None else 'float32'} (median of {config['reps']}, each library "
        f"in its own block); jax {jax.__version__} on {jax.default_backend()}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(header + "\n\n" + markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare_backpack.md").write_text(header + "\n\n" + markdown + "\n")
    result = {
        "config": {**config, "loss": LOSS, "header": header},
        "rows": rows,
        "fnn_s": fnn_s,
        "torch_s": torch_s,
        "seconds": time.perf_counter() - start,
    }
    (args.out / "compare_backpack.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
