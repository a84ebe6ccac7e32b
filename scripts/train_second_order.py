"""SGD, Adam, K-FAC and Hessian-free (fnn.optim), and kfac-jax's K-FAC when installed, on
the bundled digits and on Bishop Fig. 5.3's sin(x) (S21, S27, S28).

* digits: ``sklearn.datasets.load_digits`` (8×8 images, 10 classes, bundled with
  scikit-learn), a 64-H-10 tanh network, softmax-cross-entropy, mini-batches; the target is
  97 % test accuracy.
* sin(x): N = 50 points uniform in (−1, 1), the 1-3-1 tanh network of Bishop Fig. 5.3,
  mean squared error, full batch (one step per epoch); the target a training loss.

Every optimizer starts from the same parameters and sees the same batches; every step is
one compiled call, timed with ``block_until_ready`` after one untimed warm-up step (the
compile). kfac-jax (the optional ``second-order`` extra) trains the same network written
for its layer registration (``x @ W + b``), with its adaptive learning rate, momentum and
damping. Its optimizer is skipped, saying so, when it is not installed.

Writes ``train_second_order.png`` (loss against epochs and against seconds, both problems)
and ``train_second_order.json`` to ``--out`` (default ``results/``), prints a table of epochs
and seconds to each target and a verdict. Wall times on a shared machine are as measured.

    python scripts/train_second_order.py [--epochs 20] [--sin-epochs 100] [--hidden 64]
"""

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import fnn
from fnn import optim

try:
    import kfac_jax
except ImportError:  # the optional "second-order" extra
    kfac_jax = None


def _kfac_jax_compat():
    """kfac-jax 0.0.8 expects ``Primitive.get_bind_params`` to return ``(subfuns, params)``;
    newer jax returns the params alone. Evaluate an equation either way."""
    from kfac_jax._src import tag_graph_matcher

    def eval_jaxpr_eqn(eqn, in_values):
        bound = eqn.primitive.get_bind_params(eqn.params)
        subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
        with tag_graph_matcher.jex.source_info_util.user_context(eqn.source_info.traceback):
            out = eqn.primitive.bind(*subfuns, *in_values, **params)
        return out if isinstance(out, list) else [out]

    tag_graph_matcher.eval_jaxpr_eqn = eval_jaxpr_eqn


if kfac_jax is not None:
    _kfac_jax_compat()


def digits_data(seed):
    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))
    x, y = (d.data[order] / 16.0).astype(np.float32), d.target[order]
    n = int(0.8 * len(y))
    return (jnp.asarray(x[:n]), jnp.asarray(y[:n])), (jnp.asarray(x[n:]), jnp.asarray(y[n:]))


def sin_data(seed, n=50):
    x = np.random.default_rng(seed).uniform(-1, 1, (n, 1)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(np.sin(x))


# ---------------------------------------------------------------------------------------
# One compiled step per optimizer: step(params, state, x, y) -> (params, state, loss).
# ---------------------------------------------------------------------------------------


def fnn_step(net, optimizer, loss):
    @jax.jit
    def step(params, state, x, y):
        L, grads = fnn.value_and_grad(net, params, x, y, loss=loss)
        updates, state = optimizer.update(grads["params"], state, params, x=x, y=y)
        return optax.apply_updates(params, updates), state, L

    return optimizer.init, step


def kfac_jax_step(loss, seed):
    """kfac-jax's optimizer on the same network in its own layout (``x @ W + b``); the
    parameters are converted in and out so that the loop sees fnn's."""

    def forward(p, x):
        for i, layer in enumerate(p):
            x = x @ layer["W"] + layer["b"]
            if i + 1 < len(p):
                x = jnp.tanh(x)
        return x

    def loss_fn(p, batch):
        x, y = batch
        out = forward(p, x)
        if loss == "softmax_cross_entropy":
            kfac_jax.register_softmax_cross_entropy_loss(out, y)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))
        kfac_jax.register_squared_error_loss(out, y)  # ½‖ŷ − y‖²: fnn's l2 is twice this
        return jnp.mean(jnp.sum((out - y) ** 2, axis=-1))

    opt = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss_fn),
        l2_reg=0.0,
        use_adaptive_learning_rate=True,
        use_adaptive_momentum=True,
        use_adaptive_damping=True,
        initial_damping=1.0,
        num_burnin_steps=0,  # burn-in needs a data iterator; the loop passes batches
        multi_device=False,
    )
    # fresh buffers: kfac-jax donates its parameters, and the caller keeps using its own
    to_kfac = lambda params: [{"W": p["W"].T, "b": jnp.copy(p["b"])} for p in params]  # noqa: E731
    from_kfac = lambda p: [{"W": q["W"].T, "b": q["b"]} for q in p]  # noqa: E731
    rng = jax.random.key(seed)

    def init(params):
        return None, 0

    def step(params, state, x, y):  # kfac-jax wants the step count as a Python int
        p, (state, count) = to_kfac(params), state
        if state is None:
            state = opt.init(p, rng, (x, y))
        key = jax.random.fold_in(rng, count)
        p, state, stats = opt.step(p, state, key, batch=(x, y), global_step_int=count)
        return from_kfac(p), (state, count + 1), stats["loss"]

    return init, step


# ---------------------------------------------------------------------------------------
# The loop: same batches for every optimizer, timed per epoch.
# ---------------------------------------------------------------------------------------


def train(init, step, params, train_set, epochs, batch_size, evaluate, seed):
    x, y = train_set
    n = x.shape[0]
    steps = n // batch_size
    state = init(params)
    warm_params, warm_state, idx = params, state, np.arange(batch_size)  # the loop's gather
    for _ in range(6):  # compile every variant (kfac-jax's: first step, inverse updates, rest)
        warm_params, warm_state, _ = step(warm_params, warm_state, x[idx], y[idx])
    jax.block_until_ready(warm_params)
    rng = np.random.default_rng(seed)
    record = {"train_loss": [], "metric": [], "seconds": []}
    clock = 0.0
    for _ in range(epochs):
        order = rng.permutation(n)[: steps * batch_size].reshape(steps, batch_size)
        losses = []
        start = time.perf_counter()
        for idx in order:
            params, state, L = step(params, state, x[idx], y[idx])
            losses.append(L)
        jax.block_until_ready(params)
        clock += time.perf_counter() - start
        record["train_loss"].append(float(np.mean(jax.device_get(losses))))
        record["metric"].append(evaluate(params))
        record["seconds"].append(clock)
    return record


def first_reaching(record, target, above):
    hits = [i for i, m in enumerate(record["metric"]) if (m >= target if above else m <= target)]
    if not hits:
        return None, None
    return hits[0] + 1, record["seconds"][hits[0]]


def optimizers(net, loss, args, problem):
    """name → ``(init, step)``; learning rates per problem."""
    lr = {"digits": (0.3, args.adam_lr, 0.3), "sin": (0.3, 3e-2, 1.0)}[problem]
    kfac = optim.kfac(
        net, learning_rate=lr[2], damping=args.damping, loss=loss,
        update_every=args.update_every, min_damping=args.min_damping,
    )  # fmt: skip
    hf_floor = args.hf_min_damping if problem == "digits" else 1e-8  # full batch: no noise
    hessian_free = optim.hessian_free(
        net, loss=loss, damping=max(args.damping, hf_floor), cg_iterations=args.cg_iterations,
        min_damping=hf_floor,
    )  # fmt: skip
    out = {
        "SGD": fnn_step(net, optax.sgd(lr[0], momentum=0.9), loss),
        "Adam": fnn_step(net, optax.adam(lr[1]), loss),
        "K-FAC (fnn)": fnn_step(net, kfac, loss),
        "Hessian-free (fnn)": fnn_step(net, hessian_free, loss),
    }
    if kfac_jax is not None and not args.no_kfac_jax:
        out["K-FAC (kfac-jax)"] = kfac_jax_step(loss, args.seed)
    return out


def run_problem(problem, args):
    if problem == "digits":
        net, loss = fnn.MLP((64, args.hidden, 10), ("tanh", "identity")), "softmax_cross_entropy"
        train_set, (xt, yt) = digits_data(args.seed)
        epochs, batch_size, target, above = args.epochs, args.batch_size, 0.97, True

        def evaluate(params):
            return float(jnp.mean(jnp.argmax(fnn.apply(net, params, xt), axis=1) == yt))
    else:
        net, loss = fnn.MLP((1, 3, 1), ("tanh", "identity")), "l2"
        train_set = sin_data(args.seed)
        epochs, batch_size, target, above = args.sin_epochs, 50, args.sin_target, False

        def evaluate(params):
            x, y = train_set
            return float(jnp.mean(jnp.sum((fnn.apply(net, params, x) - y) ** 2, axis=1)))

    params = fnn.init(jax.random.key(args.seed), net)
    results = {}
    for name, (init, step) in optimizers(net, loss, args, problem).items():
        record = train(init, step, params, train_set, epochs, batch_size, evaluate, args.seed)
        record["epochs_to_target"], record["seconds_to_target"] = first_reaching(
            record, target, above
        )
        per_epoch = np.diff(record["seconds"], prepend=0.0)
        record["seconds_per_epoch"] = float(np.median(per_epoch))  # robust to a late compile
        results[name] = record
        print(f"  {problem:6s} {name:20s} done: metric {record['metric'][-1]:.4g}", flush=True)
    return {"target": target, "metric": "test accuracy" if above else "training MSE",
            "epochs": epochs, "optimizers": results}  # fmt: skip


def plot(all_results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for row, (problem, res) in enumerate(all_results.items()):
        for name, r in res["optimizers"].items():
            epochs = np.arange(1, len(r["train_loss"]) + 1)
            axes[row, 0].semilogy(epochs, r["train_loss"], label=name)
            axes[row, 1].semilogy(r["seconds"], r["train_loss"], label=name)
        axes[row, 0].set(xlabel="epoch", ylabel=f"{problem}: training loss")
        axes[row, 1].set(xlabel="seconds (as measured)", ylabel=f"{problem}: training loss")
        axes[row, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(all_results):
    lines = ["| problem | optimizer | final metric | epochs to target | s to target | s/epoch |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for problem, res in all_results.items():
        for name, r in res["optimizers"].items():
            e, s = r["epochs_to_target"], r["seconds_to_target"]
            lines.append(
                f"| {problem} ({res['metric']} target {res['target']}) | {name} | "
                f"{r['metric'][-1]:.4g} | {e if e else '—'} | {f'{s:.2f}' if s else '—'} | "
                f"{r['seconds_per_epoch']:.4f} |"
            )
    return "\n".join(lines)


def verdict(all_results):
    d, s = all_results["digits"]["optimizers"], all_results["sin"]["optimizers"]
    parts = []
    k, a = d["K-FAC (fnn)"]["epochs_to_target"], d["Adam"]["epochs_to_target"]
    n = all_results["digits"]["epochs"]
    parts.append(
        f"K-FAC (fnn) reaches 97 % test accuracy in {k or f'more than {n}'} epochs, "
        f"Adam in {a or f'more than {n}'}"
    )
    if "K-FAC (kfac-jax)" in d:
        ratio = d["K-FAC (fnn)"]["seconds_per_epoch"] / d["K-FAC (kfac-jax)"]["seconds_per_epoch"]
        parts.append(f"time per epoch fnn ÷ kfac-jax = {ratio:.2f}")
    else:
        parts.append("kfac-jax not installed (pip install 'fnn[second-order]')")
    hf, ad = s["Hessian-free (fnn)"]["train_loss"][-1], s["Adam"]["train_loss"][-1]
    parts.append(f"sin(x) after {all_results['sin']['epochs']} epochs: Hessian-free {hf:.3g} "
                 f"vs Adam {ad:.3g} training loss")  # fmt: skip
    return "Verdict: " + "; ".join(parts) + "."


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="digits epochs")
    parser.add_argument("--sin-epochs", type=int, default=100, help="sin(x) epochs (full batch)")
    parser.add_argument("--sin-target", type=float, default=1e-3, help="sin(x) training MSE")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--adam-lr", type=float, default=1e-2, help="Adam's step, digits")
    parser.add_argument("--damping", type=float, default=1e-1, help="initial λ of K-FAC, HF")
    parser.add_argument("--min-damping", type=float, default=1e-2, help="least λ (mini-batches)")
    parser.add_argument("--hf-min-damping", type=float, default=0.3, help="HF's least λ, digits")
    parser.add_argument("--update-every", type=int, default=5, help="K-FAC refresh period")
    parser.add_argument("--cg-iterations", type=int, default=10)
    parser.add_argument("--no-kfac-jax", action="store_true", help="skip kfac-jax")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)

    if kfac_jax is None:
        print("kfac-jax is not installed: its optimizer is skipped (extra 'second-order').")
    all_results = {problem: run_problem(problem, args) for problem in ("digits", "sin")}
    args.out.mkdir(parents=True, exist_ok=True)
    plot(all_results, args.out / "train_second_order.png")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings["backend"] = jax.default_backend()
    (args.out / "train_second_order.json").write_text(
        json.dumps({"settings": settings, "problems": all_results}, indent=2)
    )
    print(table(all_results))
    print(verdict(all_results))
    return all_results


if __name__ == "__main__":
    main()
