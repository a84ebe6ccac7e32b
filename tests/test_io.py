"""fnn.save / fnn.load: one pickle-free .npz, exact for every float dtype, loud on bad files
(S30)."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import io as fnn_io

NET = fnn.MLP((3, 4, 4, 2), ("prelu", "tanh", "identity"))
DTYPES = [jnp.float64, jnp.float32, jnp.float16, jnp.bfloat16, jnp.float8_e4m3fn]


def _params(dtype):
    """NET's parameters in ``dtype``, with the bit patterns a lossy format would lose: −0,
    ±inf, NaN, a subnormal and a PReLU α away from its initial 0.25."""
    params = jax.tree.map(lambda p: p.astype(dtype), fnn.init(jax.random.key(0), NET))
    tiny = jnp.finfo(dtype).smallest_subnormal
    W = params[0]["W"].at[0, :].set(jnp.array([-0.0, tiny, jnp.nan], dtype))
    params[0] = {**params[0], "W": W, "alpha": jnp.asarray(-0.3, dtype)}
    if jnp.finfo(dtype).max > 1e4:  # float8_e4m3fn has no inf
        params[1] = {
            **params[1],
            "b": params[1]["b"].at[:2].set(jnp.array([jnp.inf, -jnp.inf], dtype)),
        }
    return params


def _bits(params):
    return [
        np.asarray(p).view(np.dtype(f"u{np.dtype(p.dtype).itemsize}"))
        for p in jax.tree.leaves(params)
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_is_exact_for_every_float_dtype_S30(tmp_path, dtype):
    params = _params(dtype)
    path = tmp_path / "model.weights"  # no .npz suffix: the file is exactly this path
    fnn.save(path, NET, params)
    assert sorted(os.listdir(tmp_path)) == ["model.weights"]  # no temporary file left
    net, loaded = fnn.load(path)
    assert net == NET
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    assert [p.dtype for p in jax.tree.leaves(loaded)] == [p.dtype for p in jax.tree.leaves(params)]
    for got, want in zip(_bits(loaded), _bits(params)):
        np.testing.assert_array_equal(got, want)  # bit for bit: −0, NaN, inf, subnormals
    assert float(loaded[0]["alpha"]) == float(jnp.asarray(-0.3, dtype))
    # The loaded network computes what the saved one does.
    if dtype in (jnp.float64, jnp.float32):
        x = jnp.ones((2, 3), dtype)
        clean = _params(dtype)
        clean[0] = {**clean[0], "W": jnp.ones_like(clean[0]["W"])}
        clean[1] = {**clean[1], "b": jnp.zeros_like(clean[1]["b"])}
        fnn.save(path, NET, clean)
        np.testing.assert_array_equal(fnn.apply(*fnn.load(path), x), fnn.apply(NET, clean, x))


def test_the_file_holds_every_field_of_the_network_and_no_pickle_S30(tmp_path):
    path = tmp_path / "net.npz"
    fnn.save(path, NET, _params(jnp.float32))
    with np.load(path, allow_pickle=False) as npz:  # readable without pickle by plain NumPy
        header = json.loads(str(npz["__fnn__"]))
        assert {name for name in npz.files if name != "__fnn__"} == set(header["dtypes"])
        assert npz["params/0/W"].dtype == np.float32
    fields = {f.name for f in dataclasses.fields(fnn.MLP) if f.init}
    assert set(header["net"]) == fields
    assert header["format"] == "fnn" and header["version"] == fnn_io.VERSION
    assert header["net"]["sizes"] == [3, 4, 4, 2]


def _rewrite_header(path, change):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(str(arrays["__fnn__"]))
    change(header)
    arrays["__fnn__"] = np.asarray(json.dumps(header))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "net.npz"
    fnn.save(path, NET, _params(jnp.float32))
    return path


def test_a_file_of_a_newer_version_is_refused_S30(saved):
    _rewrite_header(saved, lambda h: h.update(version=fnn_io.VERSION + 1))
    with pytest.raises(ValueError, match=rf"{saved}: written in format version 2 by a newer fnn"):
        fnn.load(saved)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda h: h.update(format="something"), r"not an fnn file: the header does not name"),
        (lambda h: h.update(version="1"), r"format version '1' is not valid"),
        (lambda h: h["net"].update(depth=3), r"field\(s\) \['depth'\] that this fnn's MLP"),
        (lambda h: h["net"].update(sizes=[3, 4, 2]), r"stored network configuration is invalid"),
        (lambda h: h["dtypes"].update({"params/0/W": "float16"}), r"stored as float32, not as"),
        (lambda h: h["dtypes"].update({"params/0/W": "int8"}), r"'params/0/W' has dtype int8;"),
        (lambda h: h["dtypes"].update({"params/0/W": "uint32"}), r"dtype uint32; parameters must"),
        (lambda h: h["dtypes"].update({"params/0/W": "u16"}), r"'params/0/W' has an unknown dtype"),
        (lambda h: h["dtypes"].pop("params/1/b"), r"'params/1/b' is missing"),
    ],
)
def test_a_damaged_header_is_refused_S30(saved, change, match):
    _rewrite_header(saved, change)
    with pytest.raises(ValueError, match=rf"{saved}: .*{match}"):
        fnn.load(saved)


def test_files_that_are_not_fnn_files_are_refused_S30(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=rf"{text}: not a readable fnn file"):
        fnn.load(text)
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match=rf"{npy}: not an fnn file: one .npy array"):
        fnn.load(npy)
    other = tmp_path / "other.npz"
    np.savez(other, W=np.ones(3))
    with pytest.raises(ValueError, match=rf"{other}: not an fnn file: an .npz archive without"):
        fnn.load(other)
    pickled = tmp_path / "pickled.npz"
    with open(pickled, "wb") as f:
        np.save(f, np.array([{"W": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=rf"{pickled}: not a readable fnn file"):
        fnn.load(pickled)
    with pytest.raises(FileNotFoundError):
        fnn.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, -1])
def test_a_truncated_file_is_refused_S30(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) - 1] if keep == -1 else data[: int(keep * len(data))])
    with pytest.raises(ValueError, match=rf"{saved}: not a readable fnn file: truncated"):
        fnn.load(saved)


def test_a_flipped_byte_is_refused_S30(saved):
    data = bytearray(saved.read_bytes())
    with np.load(saved) as npz:  # find W's bytes, so the flip hits an array, not padding
        W = npz["params/0/W"].tobytes()
    at = bytes(data).index(W) + 1
    data[at] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{saved}: not a readable fnn file.*CRC"):
        fnn.load(saved)


def test_float64_without_x64_is_refused_not_rounded_S30(tmp_path):
    path = tmp_path / "net64.npz"
    fnn.save(path, NET, _params(jnp.float64))
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match=r"'params/0/W' is float64, which JAX would round"):
            fnn.load(path)


def test_a_failed_write_leaves_the_old_file_S30(saved, monkeypatch):
    before = saved.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        fnn.save(saved, NET, _params(jnp.float16))
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]  # the temporary file is gone


@pytest.mark.parametrize(
    ("net", "params", "error", "match"),
    [
        ("3-4-2", None, TypeError, r"net must be an fnn.MLP; got str"),
        (NET, "params", ValueError, r"params must be a list of 3 per-layer dicts"),
        (NET, [], ValueError, r"params must hold 3 layers"),
    ],
)
def test_save_refuses_bad_arguments_and_writes_nothing_S30(tmp_path, net, params, error, match):
    with pytest.raises(error, match=match):
        fnn.save(tmp_path / "x.npz", net, params)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------
# Paths: refused before anything is written; links followed; debris of killed writers gone.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "error", "match"),
    [
        (None, TypeError, r"path must be a file path \(str or os.PathLike\); got None"),
        (3, TypeError, r"path must be a file path .*; got 3"),
        (".", ValueError, r"path must be a file path; '.*' is a directory"),
        ("missing/net.npz", ValueError, r"path = '.*missing/net.npz': the directory .* not exist"),
    ],
)
def test_save_refuses_a_path_that_is_not_a_file_path_S30(tmp_path, path, error, match):
    if isinstance(path, str):
        path = str(tmp_path / path)
    with pytest.raises(error, match=match):
        fnn.save(path, NET, _params(jnp.float32))
    assert os.listdir(tmp_path) == []


def test_load_of_none_is_a_type_error_S30():
    with pytest.raises(TypeError, match=r"path must be a file path .*; got None"):
        fnn.load(None)


def test_save_to_a_symbolic_link_writes_its_target_S30(tmp_path):
    target = tmp_path / "real.npz"
    fnn.save(target, NET, _params(jnp.float32))
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    params = _params(jnp.float16)
    fnn.save(link, NET, params)
    assert link.is_symlink() and os.readlink(link) == str(target)
    _, loaded = fnn.load(target)  # the target holds the new parameters
    assert loaded[0]["W"].dtype == jnp.float16
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "real.npz"]


def test_stale_temporary_files_are_removed_at_the_next_write_S30(tmp_path):
    path = tmp_path / "net.npz"
    stale = [tmp_path / ".net.npz.abc123.tmp", tmp_path / ".net.npz.zz_9.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")  # what a writer killed mid-write leaves
    other = tmp_path / ".other.npz.abc.tmp"  # another file's: left alone
    other.write_bytes(b"x")
    fnn.save(path, NET, _params(jnp.float32))
    assert sorted(os.listdir(tmp_path)) == [".other.npz.abc.tmp", "net.npz"]
