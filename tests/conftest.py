"""Test configuration: float64 is switched on for the whole suite.

Exactness tests (hand derivative vs jax.grad vs central differences) need float64;
tests that are about float32 ask for it explicitly with ``dtype=jnp.float32``.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import settings

import fnn

jax.config.update("jax_enable_x64", True)

# In CI (CI=true) every run draws the same hypothesis examples, so a red build is
# reproducible; locally each run explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def random_problem(sizes, acts, loss="l2", seed=0, dtype=np.float64, batch=4):
    """A random network, input and target, drawn with NumPy (no per-shape XLA compiles)."""
    net = fnn.MLP(sizes, acts)
    rng = np.random.default_rng(seed)
    params = [
        {k: jnp.asarray(rng.normal(0.0, 0.6, s).astype(dtype)) for k, s in layer.items()}
        for layer in net.layer_shapes()
    ]
    x = jnp.asarray(rng.normal(size=(batch, sizes[0])).astype(dtype))
    if fnn.losses.get(loss).target == "label":
        y = jnp.asarray(rng.integers(0, sizes[-1], batch))
    else:
        y = jnp.asarray(rng.normal(size=(batch, sizes[-1])).astype(dtype))
    return net, params, x, y


def load_script(path):
    """Import a script (``scripts/*.py``, ``benchmarks/*.py``) as a module, to call its main()."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
