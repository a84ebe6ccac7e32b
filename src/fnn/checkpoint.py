r"""Checkpoints of :func:`fnn.training.fit`: a resumable training state in one fnn file (S30).

A checkpoint is an :func:`fnn.save` file (so ``fnn.load`` reads its network and parameters)
with the rest of the run added:

* ``opt_state/<i>``: the optimizer state's leaves in ``jax.tree.leaves`` order (a PRNG key
  leaf as its key data);
* ``loss``: the step losses so far;
* the header's ``"checkpoint"`` entry: the epoch reached, the run's key and its *settings*
  — number of examples, batch size, loss (by name), method, ``max_norm``,
  ``noise_multiplier`` and a digest of the data ``x``, ``y``.

A run resumes only the run that wrote the file: the same network, key and settings, and
parameters and optimizer state of the same structure, shapes and dtypes. Anything else is
a ``ValueError`` naming the path and the difference — a setting that only one side has
included — so that a history never mixes two runs. (An optimizer's hyperparameters, such
as its learning rate, are not in the file and cannot be compared.)

With several processes process 0 reads and writes the file; every process learns what it
found (:func:`resume`) and whether it could write (:func:`save_state`), so that none waits
in a collective for a process that has stopped.
"""

from __future__ import annotations

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from fnn import distributed
from fnn import io as fnn_io

__all__ = [
    "check_checkpoint_path",
    "data_digest",
    "read_checkpoint",
    "resume",
    "save_state",
    "write_checkpoint",
]

_ABSENT = "<not set>"  # a setting that one side of a comparison does not have


def data_digest(x, y) -> str:
    """A SHA-256 digest (hex, 16 characters) of the data's shapes, dtypes and bytes: a
    resumed run on other data of the same size is noticed (S30)."""
    digest = hashlib.sha256()
    for array in (x, y):
        array = np.asarray(array)
        digest.update(f"{array.shape}{array.dtype.str}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def check_checkpoint_path(path) -> str | None:
    """``path`` as a string (or ``None``), checked before the first epoch is trained: a file
    path (``TypeError`` otherwise) that is not a directory and whose directory exists
    (``ValueError`` otherwise). With several processes only process 0's path is checked,
    and every process learns the outcome."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path or None; got {type(path).__name__}.")
    distributed.on_process_0(
        lambda: fnn_io.check_path(path, "checkpoint"),
        (TypeError, ValueError),
        ValueError(f"checkpoint = {os.fspath(path)!r}: process 0 refused it; see its message."),
    )
    return os.fspath(path)


def write_checkpoint(path, net, params, opt_state, *, epoch: int, key, loss, run: dict) -> None:
    """Write a resumable training state to ``path`` atomically (S30).

    Args:
      path: the file (see :func:`fnn.save`: atomic, a symbolic link's target written).
      net, params: the network and its parameters now.
      opt_state: any optax state pytree.
      epoch: the number of epochs done.
      key: the run's PRNG key.
      loss: the step losses so far.
      run: the settings a resumed run must share; numbers of any type (NumPy's included),
        strings, ``None`` and tuples of them.

    Raises:
      TypeError: a setting that cannot be stored.
      OSError: the file cannot be written.
    """
    header, arrays = fnn_io.encode(net, params)
    for i, leaf in enumerate(jax.tree.leaves(opt_state)):
        fnn_io.put_array(arrays, header, f"opt_state/{i}", fnn_io.key_data(leaf))
    fnn_io.put_array(arrays, header, "loss", np.asarray(loss))
    header["checkpoint"] = {
        "epoch": int(epoch),
        "key": fnn_io.key_data(key).tolist(),
        "run": {name: fnn_io.jsonable(value, name) for name, value in run.items()},
    }
    fnn_io.write_archive(path, header, arrays)


def read_checkpoint(path, net, params, opt_state, *, key, run: dict):
    """The state written by :func:`write_checkpoint`, or ``None`` when there is no file (S30).

    ``params`` and ``opt_state`` are the fresh ones of the run being resumed: the file must
    hold the same network, parameters and optimizer state of the same structure, shapes and
    dtypes, the same key and the same ``run`` settings (a setting only one side has counts
    as different).

    Returns:
      ``(params, opt_state, epoch, loss)``, or ``None``.

    Raises:
      ValueError: the file is not a checkpoint, is damaged, or belongs to another run; the
        message names the path and the difference.
    """
    if not os.path.exists(path):
        return None
    header, arrays = fnn_io.read_archive(path)
    saved_net, saved_params = fnn_io.decode(path, header, arrays)
    state = _state_of(path, header)
    if saved_net != net:
        raise ValueError(f"{path}: the checkpoint holds {saved_net}; this run trains {net}.")
    _check_like(path, "params", saved_params, params)  # the data's digest is of x in its dtype
    _check_settings(path, state["run"], run)
    if state["key"] != fnn_io.key_data(key).tolist():
        raise ValueError(
            f"{path}: the checkpoint was written by a run with another key; pass the same key "
            "to resume, or another checkpoint path to start afresh."
        )
    restored = _restore_opt_state(path, header, arrays, opt_state)
    loss = np.asarray(fnn_io.get_array(path, header, arrays, "loss", floating=True))
    return saved_params, restored, int(state["epoch"]), loss


def _state_of(path, header) -> dict:
    state = header.get("checkpoint")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: an fnn network file, but not a training checkpoint of fit.")
    if not (
        isinstance(state.get("epoch"), int)
        and isinstance(state.get("key"), list)
        and isinstance(state.get("run"), dict)
    ):
        raise ValueError(f"{path}: the checkpoint's epoch, key or run settings are damaged.")
    return state


def _check_settings(path, saved: dict, run: dict) -> None:
    run = {name: fnn_io.jsonable(value, name) for name, value in run.items()}
    for name in sorted(set(run) | set(saved)):
        then, now = saved.get(name, _ABSENT), run.get(name, _ABSENT)
        if then == now:
            continue
        if name == "data":
            raise ValueError(
                f"{path}: the checkpoint was trained on other data x, y (digest {then}; this "
                f"run's is {now}). Pass the same data to resume, or another checkpoint path "
                "to start afresh."
            )
        raise ValueError(
            f"{path}: the checkpoint was written by a run with {name} = {then!r}; this run "
            f"has {name} = {now!r}. Pass the same arguments to resume, or another checkpoint "
            "path to start afresh."
        )


def _restore_opt_state(path, header, arrays, opt_state):
    leaves, treedef = jax.tree.flatten(opt_state)
    count = sum(name.startswith("opt_state/") for name in header["dtypes"])
    if count != len(leaves):
        raise ValueError(
            f"{path}: the checkpoint holds {count} optimizer state arrays; this run's "
            f"optimizer has {len(leaves)}. Resume with the same optimizer."
        )
    restored = [
        _wrap_like(leaf, fnn_io.get_array(path, header, arrays, f"opt_state/{i}"))
        for i, leaf in enumerate(leaves)
    ]
    restored = jax.tree.unflatten(treedef, restored)
    _check_like(path, "the optimizer state", restored, opt_state)
    return restored


def _wrap_like(fresh, value):
    if jax.dtypes.issubdtype(getattr(fresh, "dtype", None), jax.dtypes.prng_key):
        return jax.random.wrap_key_data(value, impl=jax.random.key_impl(fresh))
    return value


def _check_like(path, what, saved, fresh) -> None:
    """The restored state has the run's shapes and dtypes, leaf by leaf."""
    for (where, a), b in zip(jax.tree_util.tree_leaves_with_path(saved), jax.tree.leaves(fresh)):
        if np.shape(a) != np.shape(b) or jnp.result_type(a) != jnp.result_type(b):
            raise ValueError(
                f"{path}: {what}{jax.tree_util.keystr(where)} is stored with shape "
                f"{np.shape(a)} and dtype {jnp.result_type(a)}; this run has {np.shape(b)} and "
                f"{jnp.result_type(b)}."
            )


# ---------------------------------------------------------------------------------------
# In every process (S30).
# ---------------------------------------------------------------------------------------


def resume(path, net, params, opt_state, *, key, run: dict, steps: int):
    """The checkpoint's ``(params, opt_state, epoch, losses)`` or ``None`` (S30); with several
    processes, process 0 reads the file and every process gets what it found, bit for bit.

    Raises:
      ValueError: the checkpoint is refused (see :func:`read_checkpoint`), or its losses do
        not fit its epoch (a damaged file).
    """
    found = distributed.on_process_0(
        lambda: read_checkpoint(path, net, params, opt_state, key=key, run=run),
        (TypeError, ValueError),
        ValueError(f"{path}: process 0 refused the checkpoint; see its message."),
    )
    if jax.process_count() > 1:
        found = _share(found, params, opt_state, steps)
    if found is not None and np.size(found[3]) != found[2] * steps:
        raise ValueError(
            f"{path}: the checkpoint holds {np.size(found[3])} step losses for "
            f"{found[2]} epochs of {steps} steps; the file is damaged."
        )
    return found


def _share(found, params, opt_state, steps):
    epoch = -1 if found is None else found[2]
    epoch = int(multihost_utils.broadcast_one_to_all(np.int32(epoch)))
    if epoch == -1:
        return None
    size = epoch * steps if found is None else np.size(found[3])
    size = int(multihost_utils.broadcast_one_to_all(np.int32(size)))
    template = (params, opt_state, np.zeros(size, jnp.result_type(params[0]["W"])))
    tree = template if found is None else (found[0], found[1], found[3])
    params, opt_state, loss = distributed.broadcast_exact(tree, template)
    return params, opt_state, epoch, loss


def save_state(path, net, params, opt_state, **state) -> None:
    """:func:`write_checkpoint` on process 0 (S30); every process learns whether it could, so
    that none waits for it in the next epoch's collectives when it could not."""
    distributed.on_process_0(
        lambda: write_checkpoint(path, net, params, opt_state, **state),
        (OSError, TypeError, ValueError),
        OSError(f"{path}: process 0 could not write the checkpoint; see its message."),
    )
