"""The 8×8 digits classifier of ``train_classifier.py``, trained data-parallel by several JAX
processes (S30): on one machine with ``--num-processes N``, or on a cluster.

With ``--num-processes N`` this script starts N copies of itself on this machine, each with
``--devices-per-process`` simulated CPU devices, coordinated over 127.0.0.1 (a free port),
and waits for them (at most ``--timeout`` seconds; if one fails, the others are stopped).
Without it, the process joins a cluster through ``fnn.distributed.initialize_distributed``:
JAX's own auto-detection (SLURM, Open MPI, Kubernetes, Cloud TPU) or the environment
variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.

Every process loads the digits (bundled with scikit-learn), keeps its own equal share of the
training set, and calls ``fnn.training.fit`` on it with Adam: one global mesh over all
devices, parameters replicated, the gradient the mean over the global batch. Process 0
prints the process/device layout, the loss of every epoch and the test accuracy, and writes
``distributed.png`` and ``distributed.json`` to ``--out`` (default ``results/``).
``--checkpoint PATH`` makes the run resumable: started again, it goes on from the last
checkpoint (every ``--every`` epochs).

    python scripts/train_distributed.py --num-processes 2 [--devices-per-process 2] [--quick]
    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=4 JAX_PROCESS_ID=$i \\
        python scripts/train_distributed.py          # on each of 4 hosts, i = 0 … 3
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(
    command, num_processes, *, devices_per_process=1, timeout=600.0, echo=False, env=None
):
    """Run ``command`` as ``num_processes`` JAX processes on this machine (CPU devices),
    coordinated over 127.0.0.1; stop all of them when one fails or ``timeout`` is up.

    Returns a list of ``(returncode, stdout, stderr)``, one per process (``returncode`` is
    ``None`` for a process stopped at the timeout). With ``echo``, process 0 writes to this
    process's stdout directly (its ``stdout`` is then empty). ``env`` adds environment
    variables.
    """
    address = f"127.0.0.1:{free_port()}"
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(
        os.environ,
        **(env or {}),
        JAX_PLATFORMS="cpu",
        JAX_COORDINATOR_ADDRESS=address,
        JAX_NUM_PROCESSES=str(num_processes),
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices_per_process}",
    )
    procs, outs, errs = [], [], []
    deadline = time.monotonic() + timeout
    try:
        for i in range(num_processes):
            outs.append(None if echo and i == 0 else tempfile.TemporaryFile("w+"))
            errs.append(tempfile.TemporaryFile("w+"))
            procs.append(
                subprocess.Popen(
                    command,
                    env=dict(env, JAX_PROCESS_ID=str(i)),
                    stdout=outs[i],
                    stderr=errs[i],
                    text=True,
                )
            )
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
                break
            time.sleep(0.05)
    finally:  # whatever happened: no process outlives this function
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    results = []
    for code, out, err in zip([p.returncode for p in procs], outs, errs):
        texts = []
        for f in (out, err):
            if f is None:
                texts.append("")
                continue
            f.seek(0)
            texts.append(f.read())
            f.close()
        results.append((code, *texts))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--num-processes", type=int, help="start this many local processes")
    parser.add_argument("--devices-per-process", type=int, default=2, help="with --num-processes")
    parser.add_argument("--timeout", type=int, default=600, help="seconds for the whole run")
    parser.add_argument("--connect-timeout", type=int, default=60, help="seconds to connect")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32, help="global, over all devices")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units")
    parser.add_argument("--lr", type=float, default=3e-3, help="step size of Adam")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, help="resumable: write/resume this file")
    parser.add_argument("--every", type=int, default=1, help="checkpoint every k epochs")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    parser.add_argument("--quick", action="store_true", help="3 epochs (tests)")
    args = parser.parse_args(argv)

    if args.num_processes is not None:  # the launcher: this script, N times, on 127.0.0.1
        argv = sys.argv[1:] if argv is None else list(argv)
        child = [sys.executable, os.path.abspath(__file__), *_without(argv, "--num-processes")]
        results = launch_local(
            child,
            args.num_processes,
            devices_per_process=args.devices_per_process,
            timeout=args.timeout,
            echo=True,
        )
        failed = [(i, r) for i, r in enumerate(results) if r[0] != 0]
        for i, (code, out, err) in failed:
            state = "timed out" if code is None else f"exited with {code}"
            print(f"process {i} {state}:\n{out[-2000:]}{err[-3000:]}", file=sys.stderr)
        return 1 if failed else 0
    return train(args)


def _without(argv, option):
    """``argv`` without ``option VALUE`` and ``option=VALUE``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


def train(args):
    from fnn import distributed, training  # jax.distributed must start before JAX does anything

    distributed.initialize_distributed(timeout=args.connect_timeout)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import fnn

    me, processes = jax.process_index(), jax.process_count()
    say = print if me == 0 else (lambda *a, **k: None)
    if args.quick:
        args.epochs = 3
    say(f"{processes} processes, {jax.device_count()} devices ({jax.default_backend()}):")
    for p in range(processes):
        devices = [str(d) for d in jax.devices() if d.process_index == p]
        say(f"  process {p}: {len(devices)} devices {', '.join(devices)}")

    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, stratify=digits.target, random_state=args.seed
    )
    # Every process keeps an equal share, a multiple of its devices; the rest is dropped.
    local = jax.local_device_count()
    share = len(x_train) // (processes * local) * local
    mine = slice(me * share, (me + 1) * share)
    say(
        f"{len(x_train)} training images: {share} per process "
        f"({len(x_train) - share * processes} dropped), {len(x_test)} test images"
    )

    net = fnn.MLP((64, args.hidden, 10), ("tanh", "identity"))
    init_key, shuffle_key = jax.random.split(jax.random.key(args.seed))
    params = fnn.init(init_key, net, dtype=jnp.float32)
    start = time.perf_counter()
    params, history = training.fit(
        net,
        params,
        x_train[mine],
        y_train[mine],
        optax.adam(args.lr),
        key=shuffle_key,
        loss="softmax_cross_entropy",
        epochs=args.epochs,
        batch_size=args.batch_size,
        checkpoint=args.checkpoint,
        every=args.every,
    )
    seconds = time.perf_counter() - start
    if me != 0:
        return 0

    params = jax.tree.map(np.asarray, params)  # replicated: every process holds all of it
    test_accuracy = float(np.mean(np.argmax(fnn.apply(net, params, x_test), -1) == y_test))
    print(f"{'epoch':>5} {'loss':>9}")
    for epoch, loss in enumerate(history.epoch_loss, 1):
        print(f"{epoch:5d} {loss:9.4f}")
    print(f"test accuracy {test_accuracy:.2%} after {args.epochs} epochs, {seconds:.2f} s")
    layout = {"processes": processes, "devices": jax.device_count(), "local": local}
    _write_results(args, history, test_accuracy, layout, share, seconds)
    return 0


def _write_results(args, history, test_accuracy, layout, share, seconds):
    """The loss curve as a PNG and the run as JSON, under ``--out``."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, args.epochs + 1), history.epoch_loss, marker=".")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss (softmax cross-entropy)")
    ax.set_title(
        f"8×8 digits, {layout['processes']} processes × {layout['local']} devices, "
        f"test {test_accuracy:.1%}"
    )
    fig.tight_layout()
    fig.savefig(args.out / "distributed.png", dpi=60 if args.quick else 120)
    plt.close(fig)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {
        "settings": settings,
        "processes": layout["processes"],
        "devices": layout["devices"],
        "examples_per_process": share,
        "epoch_loss": history.epoch_loss.tolist(),
        "test_accuracy": test_accuracy,
        "seconds": seconds,
    }
    (args.out / "distributed.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'distributed.png'} and {args.out / 'distributed.json'}")


if __name__ == "__main__":
    sys.exit(main())
