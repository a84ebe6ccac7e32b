r"""A network on disk: one ``.npz`` file, no pickle (S30).

``fnn.save(path, net, params)`` writes, to exactly ``path``, a NumPy ``.npz`` archive with

* ``__fnn__``: a JSON header — the format name ``"fnn"``, the format version, every field
  of the :class:`~fnn.MLP` dataclass (``sizes``, ``activations``, …, read generically from
  ``dataclasses.fields``) and the dtype name of every array;
* ``params/<i>/<name>``: the arrays of layer ``i`` (``W``, ``b``, PReLU's ``alpha``). A dtype
  that NumPy cannot name (bfloat16, the float8 types) is stored as its raw bits (an unsigned
  integer view of the same width), so every float dtype comes back bit for bit.

``net, params = fnn.load(path)`` reads it with ``np.load(..., allow_pickle=False)``: nothing in
the file is executed. A file that is not fnn's, is truncated, or was written by a newer
format version gets a ``ValueError`` naming the path and what is wrong.

Every write is atomic: the archive goes to a temporary file in the same directory, is flushed
to disk, then renamed over ``path`` with ``os.replace`` — a reader (or a run restarted after a
crash) sees the old file or the new one, never half of one.

The training checkpoints of :func:`fnn.training.fit` are such files too, with the optimizer
state, the epoch, the key and the losses so far added (``write_checkpoint``,
``read_checkpoint``); ``fnn.load`` reads the network and parameters out of one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from fnn._checks import check_params
from fnn.network import MLP, Params, check_net

__all__ = ["FORMAT", "VERSION", "load", "read_checkpoint", "save", "write_checkpoint"]

FORMAT = "fnn"
VERSION = 1  # the format version this fnn writes, and the newest it reads
_HEADER = "__fnn__"


# ---------------------------------------------------------------------------------------
# The public pair.
# ---------------------------------------------------------------------------------------


def save(path: str | os.PathLike, net: MLP, params: Params) -> None:
    """Write ``net`` and ``params`` to one ``.npz`` file at exactly ``path``, atomically (S30).

    Args:
      path: the file to write (no suffix is added); its directory must exist.
      net: the architecture; every dataclass field of it is stored.
      params: parameters of ``net`` (as :func:`fnn.init` makes them), any float dtype.

    Raises:
      TypeError, ValueError: ``net`` or ``params`` do not fit (named in the message).
      OSError: the file cannot be written (the old file, if any, is left as it was).

    >>> import fnn, jax, os, tempfile
    >>> net = fnn.MLP((2, 3, 1), ("prelu", "identity"))
    >>> params = fnn.init(jax.random.key(0), net)
    >>> path = os.path.join(tempfile.mkdtemp(), "net.npz")
    >>> fnn.save(path, net, params)
    >>> net2, params2 = fnn.load(path)
    >>> net2 == net and all(bool((a == b).all()) for a, b in
    ...                     zip(jax.tree.leaves(params2), jax.tree.leaves(params)))
    True
    """
    _write(path, *_encode(net, params))


def load(path: str | os.PathLike) -> tuple[MLP, Params]:
    """Read a network written by :func:`save` (or a :func:`fnn.training.fit` checkpoint) (S30).

    Returns:
      ``(net, params)``: the :class:`~fnn.MLP` and its parameters as JAX arrays of the dtypes
      they were saved in, bit for bit.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: the file is not an fnn file, is truncated or damaged, was written by a
        newer fnn (format version), or holds float64 arrays while ``jax_enable_x64`` is off;
        the message names the path and what is wrong.
    """
    header, arrays = _read(path)
    return _decode(path, header, arrays)


# ---------------------------------------------------------------------------------------
# Checkpoints of fit (S30): the same file, plus the state of the run.
# ---------------------------------------------------------------------------------------


def write_checkpoint(path, net, params, opt_state, *, epoch: int, key, loss, run: dict) -> None:
    """Write a resumable training state to ``path`` atomically (used by ``fit``).

    ``opt_state`` is any optax state pytree: its leaves are stored in ``jax.tree.leaves``
    order (a PRNG key leaf as its key data); ``run`` holds the settings a resumed run must
    share (batch size, number of examples, loss, method); ``key`` is the run's PRNG key.
    """
    header, arrays = _encode(net, params)
    for i, leaf in enumerate(jax.tree.leaves(opt_state)):
        _put(arrays, header, f"opt_state/{i}", _key_data(leaf))
    _put(arrays, header, "loss", np.asarray(loss))
    header["checkpoint"] = {"epoch": int(epoch), "key": _key_data(key).tolist(), "run": run}
    _write(path, header, arrays)


def read_checkpoint(path, net, params, opt_state, *, key, run: dict):
    """The state written by :func:`write_checkpoint`, or ``None`` when there is no file.

    ``params`` and ``opt_state`` are the fresh ones of the run being resumed: the file must
    hold the same network, the same parameter shapes and dtypes, an optimizer state with
    the same tree structure, shapes and dtypes, the same key and the same ``run`` settings;
    otherwise a ``ValueError`` names the path and the difference.

    Returns:
      ``(params, opt_state, epoch, loss)``, or ``None``.
    """
    if not os.path.exists(path):
        return None
    header, arrays = _read(path)
    saved_net, saved_params = _decode(path, header, arrays)
    state = header.get("checkpoint")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: an fnn network file, but not a training checkpoint of fit.")
    if not (
        isinstance(state.get("epoch"), int)
        and isinstance(state.get("key"), list)
        and isinstance(state.get("run"), dict)
    ):
        raise ValueError(f"{path}: the checkpoint's epoch, key or run settings are damaged.")
    if saved_net != net:
        raise ValueError(f"{path}: the checkpoint holds {saved_net}; this run trains {net}.")
    for name in sorted(set(run) | set(state["run"])):
        if state["run"].get(name) != run.get(name):
            raise ValueError(
                f"{path}: the checkpoint was written by a run with {name} = "
                f"{state['run'].get(name)!r}; this run has {name} = {run.get(name)!r}. Pass "
                "the same arguments to resume, or another checkpoint path to start afresh."
            )
    if state["key"] != _key_data(key).tolist():
        raise ValueError(
            f"{path}: the checkpoint was written by a run with another key; pass the same key "
            "to resume, or another checkpoint path to start afresh."
        )
    _check_like(path, "params", saved_params, params)
    leaves, treedef = jax.tree.flatten(opt_state)
    count = sum(name.startswith("opt_state/") for name in header["dtypes"])
    if count != len(leaves):
        raise ValueError(
            f"{path}: the checkpoint holds {count} optimizer state arrays; this run's "
            f"optimizer has {len(leaves)}. Resume with the same optimizer."
        )
    restored = [
        _wrap_like(leaf, _array(path, header, arrays, f"opt_state/{i}"))
        for i, leaf in enumerate(leaves)
    ]
    restored = jax.tree.unflatten(treedef, restored)
    _check_like(path, "the optimizer state", restored, opt_state)
    loss = np.asarray(_array(path, header, arrays, "loss"))
    return saved_params, restored, int(state["epoch"]), loss


# ---------------------------------------------------------------------------------------
# Encoding: a JSON header and a dict of NumPy arrays.
# ---------------------------------------------------------------------------------------


def _encode(net, params) -> tuple[dict, dict]:
    check_net(net)
    check_params(net, params)
    fields = {}
    for field in dataclasses.fields(net):
        if field.init:
            fields[field.name] = _jsonable(getattr(net, field.name), f"net.{field.name}")
    header = {"format": FORMAT, "version": VERSION, "net": fields, "dtypes": {}}
    arrays = {}
    for i, layer in enumerate(params):
        for name in sorted(layer):
            _put(arrays, header, f"params/{i}/{name}", np.asarray(layer[name]))
    return header, arrays


def _decode(path, header, arrays) -> tuple[MLP, Params]:
    names = {f.name for f in dataclasses.fields(MLP) if f.init}
    fields = header.get("net")
    if not isinstance(fields, dict):
        raise ValueError(f"{path}: the fnn header holds no network configuration.")
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ValueError(
            f"{path}: the network has field(s) {unknown} that this fnn's MLP does not know; "
            "it was written by another fnn version."
        )
    try:
        net = MLP(**{name: _from_json(value) for name, value in fields.items()})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the stored network configuration is invalid: {err}") from err
    params = [
        {name: _array(path, header, arrays, f"params/{i}/{name}") for name in shapes}
        for i, shapes in enumerate(net.layer_shapes())
    ]
    try:
        check_params(net, params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the stored parameters do not fit the network: {err}") from err
    return net, params


def _put(arrays, header, name, value: np.ndarray) -> None:
    value = np.asarray(value)
    header["dtypes"][name] = value.dtype.name
    if value.dtype.type.__module__ != "numpy":  # ml_dtypes (bfloat16, float8_*): raw bits
        value = value.view(np.dtype(f"u{value.dtype.itemsize}"))
    arrays[name] = value


def _array(path, header, arrays, name) -> jax.Array:
    if name not in arrays or name not in header["dtypes"]:
        raise ValueError(f"{path}: the array {name!r} is missing; the file is damaged.")
    try:
        dtype = jnp.dtype(header["dtypes"][name])
    except TypeError as err:
        raise ValueError(f"{path}: {name!r} has an unknown dtype: {err}") from err
    value = arrays[name]
    if value.dtype != dtype:
        if value.dtype != np.dtype(f"u{dtype.itemsize}"):
            raise ValueError(
                f"{path}: {name!r} is stored as {value.dtype}, not as {dtype}; the file is damaged."
            )
        value = value.view(dtype)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:  # float64 with jax_enable_x64 off
        raise ValueError(
            f"{path}: {name!r} is {dtype}, which JAX would round to "
            f"{jax.dtypes.canonicalize_dtype(dtype)}; switch on "
            "jax.config.update('jax_enable_x64', True) before loading."
        )
    return jnp.asarray(value)


def _jsonable(value, name):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, name) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"{name} = {value!r} cannot be stored: not a number, string or tuple.")


def _from_json(value):
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def _key_data(key) -> np.ndarray:
    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key)


def _wrap_like(fresh, value):
    if jax.dtypes.issubdtype(getattr(fresh, "dtype", None), jax.dtypes.prng_key):
        return jax.random.wrap_key_data(value, impl=jax.random.key_impl(fresh))
    return value


def _check_like(path, what, saved, fresh) -> None:
    for (where, a), b in zip(jax.tree_util.tree_leaves_with_path(saved), jax.tree.leaves(fresh)):
        if np.shape(a) != np.shape(b) or jnp.result_type(a) != jnp.result_type(b):
            raise ValueError(
                f"{path}: {what}{jax.tree_util.keystr(where)} is stored with shape "
                f"{np.shape(a)} and dtype {jnp.result_type(a)}; this run has {np.shape(b)} and "
                f"{jnp.result_type(b)}."
            )


# ---------------------------------------------------------------------------------------
# The file: atomic write, pickle-free read.
# ---------------------------------------------------------------------------------------


def _write(path, header: dict, arrays: dict) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_HEADER: np.asarray(json.dumps(header))}, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read(path) -> tuple[dict, dict]:
    path = os.fspath(path)
    with open(path, "rb") as f:  # FileNotFoundError as it is
        data = f.read()
    damaged = (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError)
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except damaged as err:
        raise _unreadable(path, err) from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an fnn file: one .npy array, not an .npz archive.")
    try:
        with npz:
            text = str(npz[_HEADER]) if _HEADER in npz.files else None
            arrays = {name: npz[name] for name in npz.files if name != _HEADER}
    except damaged as err:  # a member cut off or with a bad CRC
        raise _unreadable(path, err) from err
    if text is None:
        raise ValueError(f"{path}: not an fnn file: an .npz archive without the {_HEADER!r} entry.")
    try:
        header = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path}: not an fnn file: its header is not JSON ({err}).") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not an fnn file: the header does not name the format {FORMAT!r}."
        )
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: the header's format version {version!r} is not valid.")
    if version > VERSION:
        raise ValueError(
            f"{path}: written in format version {version} by a newer fnn; this fnn reads "
            f"versions up to {VERSION}. Upgrade fnn to read it."
        )
    if not isinstance(header.get("dtypes"), dict):
        raise ValueError(f"{path}: the fnn header lists no dtypes; the file is damaged.")
    return header, arrays


def _unreadable(path, err) -> ValueError:
    return ValueError(
        f"{path}: not a readable fnn file: truncated, damaged or not an .npz archive "
        f"({type(err).__name__}: {err})."
    )
