"""Test configuration: float64 is switched on for the whole suite.

Exactness tests (hand derivative vs jax.grad vs central differences) need float64;
tests that are about float32 ask for it explicitly with ``dtype=jnp.float32``.
"""

import jax

jax.config.update("jax_enable_x64", True)
