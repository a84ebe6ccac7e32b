"""A softmax classifier for scikit-learn's 8×8 digits, trained with fnn's hand-written backprop
and three optax optimizers: SGD, SGD with momentum, Adam (S21).

The 1797 images ship inside scikit-learn (``sklearn.datasets.load_digits``, no download);
pixels are scaled to [0, 1] and a stratified 20 % is held out as the test set. The network
``64 → hidden → 10`` has tanh hidden units and an identity output whose logits go into the
fused ``softmax_cross_entropy`` loss; ``fnn.training.fit`` trains it on shuffled
mini-batches, the same initial parameters and the same shuffling key for every optimizer.

Writes ``optimizers.png`` (training loss per epoch, one curve per optimizer) and
``optimizers.json`` to ``--out`` (default ``results/``), and prints a table.

    python scripts/train_classifier.py [--epochs 30] [--batch-size 32] [--hidden 64] [--quick]
"""

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import fnn
from fnn import training


def optimizers(args):
    return {
        "SGD": optax.sgd(args.lr_sgd),
        "momentum": optax.sgd(args.lr_sgd, momentum=0.9),
        "Adam": optax.adam(args.lr_adam),
    }


def accuracy(net, params, x, labels):
    return float(jnp.mean(jnp.argmax(fnn.apply(net, params, x), axis=-1) == labels))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64, help="hidden units")
    parser.add_argument("--lr-sgd", type=float, default=0.1, help="step size of SGD, momentum")
    parser.add_argument("--lr-adam", type=float, default=3e-3, help="step size of Adam")
    parser.add_argument("--method", default="reverse", choices=training.METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    parser.add_argument("--quick", action="store_true", help="3 epochs (tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 3
    args.out.mkdir(parents=True, exist_ok=True)

    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, stratify=digits.target, random_state=args.seed
    )
    net = fnn.MLP((64, args.hidden, 10), ("tanh", "identity"))
    init_key, shuffle_key = jax.random.split(jax.random.key(args.seed))
    params0 = fnn.init(init_key, net, dtype=jnp.float32)
    print(f"{len(x_train)} training, {len(x_test)} test images; {fnn.summary(net)}")

    results = {}
    print(f"{'optimizer':<10} {'final loss':>10} {'train acc':>9} {'test acc':>9} {'time s':>7}")
    for name, optimizer in optimizers(args).items():
        start = time.perf_counter()
        params, history = training.fit(
            net,
            params0,
            x_train,
            y_train,
            optimizer,
            key=shuffle_key,
            loss="softmax_cross_entropy",
            method=args.method,
            epochs=args.epochs,
            batch_size=args.batch_size,
        )
        seconds = time.perf_counter() - start
        results[name] = {
            "epoch_loss": history.epoch_loss.tolist(),
            "train_accuracy": accuracy(net, params, x_train, y_train),
            "test_accuracy": accuracy(net, params, x_test, y_test),
            "seconds": seconds,
        }
        r = results[name]
        print(
            f"{name:<10} {history.epoch_loss[-1]:10.4f} {r['train_accuracy']:9.2%} "
            f"{r['test_accuracy']:9.2%} {seconds:7.2f}"
        )
    write_results(args, net, results)
    return results


def write_results(args, net, results):
    """The loss curves as a PNG and the results as JSON, under ``--out``."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        epochs = np.arange(1, len(r["epoch_loss"]) + 1)
        ax.plot(
            epochs, r["epoch_loss"], marker=".", label=f"{name} (test {r['test_accuracy']:.1%})"
        )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss (softmax cross-entropy)")
    ax.set_title(f"8×8 digits, {' → '.join(map(str, net.sizes))} tanh MLP, batch {args.batch_size}")
    ax.legend()
    fig.tight_layout()
    png = args.out / "optimizers.png"
    fig.savefig(png, dpi=60 if args.quick else 120)
    plt.close(fig)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    (args.out / "optimizers.json").write_text(
        json.dumps({"settings": settings, "optimizers": results}, indent=2)
    )
    print(f"wrote {png} and {args.out / 'optimizers.json'}")


if __name__ == "__main__":
    main()
