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
crash) sees the old file or the new one, never half of one. A ``path`` that is a symbolic
link gets its target written (the link stays a link), and temporary files that a killed
writer left beside ``path`` are removed by the next write to it.

The training checkpoints of :func:`fnn.training.fit` are such files too, with the optimizer
state, the epoch, the key and the losses so far added (:mod:`fnn.checkpoint`); ``fnn.load``
reads the network and parameters out of one. The helpers below the public pair
(``encode``/``decode``, ``write_archive``/``read_archive``) are what :mod:`fnn.checkpoint`
builds on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
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

__all__ = ["FORMAT", "VERSION", "load", "save"]

FORMAT = "fnn"
"""The format's name in a saved file's header; :func:`load` refuses a file without it."""
VERSION = 1
"""The format version this fnn writes, and the newest it reads."""
_HEADER = "__fnn__"


# ---------------------------------------------------------------------------------------
# The public pair.
# ---------------------------------------------------------------------------------------


def save(path: str | os.PathLike, net: MLP, params: Params) -> None:
    """Write ``net`` and ``params`` to one ``.npz`` file at exactly ``path``, atomically (S30).

    Args:
      path: the file to write (no suffix is added); its directory must exist. A symbolic link
        is followed: its target is replaced, the link kept.
      net: the architecture; every dataclass field of it is stored.
      params: parameters of ``net`` (as :func:`fnn.init` makes them), any float dtype.

    Raises:
      TypeError: ``path`` is not a file path (``None``, a number).
      ValueError: ``path`` is a directory, or its directory does not exist or is not writable.
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
    write_archive(path, *encode(net, params))


def load(path: str | os.PathLike) -> tuple[MLP, Params]:
    """Read a network written by :func:`save` (or a :func:`fnn.training.fit` checkpoint) (S30).

    Returns:
      ``(net, params)``: the :class:`~fnn.MLP` and its parameters as JAX arrays of the dtypes
      they were saved in, bit for bit.

    Raises:
      TypeError: ``path`` is not a file path.
      FileNotFoundError: no file at ``path``.
      ValueError: the file is not an fnn file, is truncated or damaged, names a parameter
        dtype that is not a float, was written by a newer fnn (format version), or holds
        float64 arrays while ``jax_enable_x64`` is off;
        the message names the path and what is wrong.
    """
    header, arrays = read_archive(path)
    return decode(path, header, arrays)


# ---------------------------------------------------------------------------------------
# Encoding: a JSON header and a dict of NumPy arrays.
# ---------------------------------------------------------------------------------------


def encode(net, params) -> tuple[dict, dict]:
    """The header (every field of ``net``) and the arrays of ``params``, checked."""
    check_net(net)
    check_params(net, params)
    fields = {}
    for field in dataclasses.fields(net):
        if field.init:
            fields[field.name] = jsonable(getattr(net, field.name), f"net.{field.name}")
    header = {"format": FORMAT, "version": VERSION, "net": fields, "dtypes": {}}
    arrays = {}
    for i, layer in enumerate(params):
        for name in sorted(layer):
            put_array(arrays, header, f"params/{i}/{name}", np.asarray(layer[name]))
    return header, arrays


def decode(path, header, arrays) -> tuple[MLP, Params]:
    """The network and parameters of a file read by :func:`read_archive`, checked."""
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
        {
            name: get_array(path, header, arrays, f"params/{i}/{name}", floating=True)
            for name in shapes
        }
        for i, shapes in enumerate(net.layer_shapes())
    ]
    try:
        check_params(net, params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the stored parameters do not fit the network: {err}") from err
    return net, params


def put_array(arrays, header, name, value: np.ndarray) -> None:
    """Store ``value`` as ``arrays[name]``, its dtype name in the header (ml_dtypes as bits)."""
    value = np.asarray(value)
    header["dtypes"][name] = value.dtype.name
    if value.dtype.type.__module__ != "numpy":  # ml_dtypes (bfloat16, float8_*): raw bits
        value = value.view(np.dtype(f"u{value.dtype.itemsize}"))
    arrays[name] = value


def get_array(path, header, arrays, name, *, floating: bool = False) -> jax.Array:
    """``arrays[name]`` as a JAX array of the header's dtype; ``ValueError`` naming the path
    and the array when it is missing, damaged, not a float (``floating``) or would be
    rounded by JAX."""
    if name not in arrays or name not in header["dtypes"]:
        raise ValueError(f"{path}: the array {name!r} is missing; the file is damaged.")
    try:
        dtype = jnp.dtype(header["dtypes"][name])
    except TypeError as err:
        raise ValueError(f"{path}: {name!r} has an unknown dtype: {err}") from err
    if floating and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{path}: {name!r} has dtype {dtype}; parameters must be floats. The file is damaged."
        )
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


def jsonable(value, name):
    """``value`` as JSON (tuples as lists, NumPy numbers as Python ones), or ``TypeError``."""
    if isinstance(value, (tuple, list)):
        return [jsonable(v, name) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"{name} = {value!r} cannot be stored: not a number, string or tuple.")


def _from_json(value):
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def key_data(key) -> np.ndarray:
    """A PRNG key's raw data (a legacy ``uint32`` key as it is), as NumPy."""
    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key)


# ---------------------------------------------------------------------------------------
# The file: atomic write, pickle-free read.
# ---------------------------------------------------------------------------------------


def check_path(path, name: str = "path") -> str:
    """``path`` as a string; ``TypeError`` unless it is a file path, ``ValueError`` when it
    names a directory or its directory does not exist or is not writable (checked before
    anything is written)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike); got {path!r}.")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{name} must be a file path; {path!r} is a directory.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{name} = {path!r}: the directory {directory!r} does not exist.")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{name} = {path!r}: the directory {directory!r} is not writable.")
    return path


def write_archive(path, header: dict, arrays: dict) -> None:
    """Write the archive atomically: a temporary file in the target's directory, flushed,
    then renamed over it. A symbolic link is followed: its target is written, the link stays.
    Temporary files of earlier writes to the same path that were cut off (a killed process)
    are removed once the new file is in place."""
    path = os.path.realpath(check_path(path))
    directory, base = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{base}.", suffix=".tmp")
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
    for stale in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(base)}.*.tmp")):
        with contextlib.suppress(OSError):
            os.remove(stale)


def read_archive(path) -> tuple[dict, dict]:
    """The JSON header and the arrays of an fnn file, read without pickle, checked."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike); got {path!r}.")
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
