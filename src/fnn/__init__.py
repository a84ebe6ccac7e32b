"""fnn — feed-forward neural networks and backpropagation, every formula a pure JAX function.

The public API (the README's Quick start; the documentation site, ``make docs``, has the
reference and the tutorials)::

    net = fnn.MLP(sizes=(10, 10, 10, 10), activations=("sigmoid", "sigmoid", "identity"))
    params = fnn.init(jax.random.key(0), net)
    y_hat = fnn.apply(net, params, x)
    loss, grads = fnn.value_and_grad(net, params, x, y, loss="l2", method="reverse")
    J = fnn.jacobian(net, params, x, mode="auto")
    t = fnn.trace(net, params, x, y)                                   # S23
    losses_b, grads_b = fnn.per_example_grads(net, params, x, y)        # S24
    Hv = fnn.hvp(net, params, x, y, v)                                  # S27

Reading order, one way down the stack: ``activations``/``losses`` (f, f′, f″, J_L, H_L) →
``layer`` (one layer's forward, JVP, VJP and second-order rules) → the engines
(``network``, ``backprop``, ``forward_mode``) → the public entry points (``derivatives``,
``extensions``, ``curvature``, ``training``, ``distributed``, ...).
"""

from fnn import (
    activations,
    backprop,
    cost_model,
    curvature,
    derivatives,
    distributed,
    extensions,
    forward_mode,
    gradcheck,
    graph,
    jacobians,
    layer,
    losses,
    numerical,
    optim,
    symmetry,
    training,
)
from fnn.curvature import (
    ggn_diagonal,
    ggn_vp,
    hessian,
    hessian_diagonal,
    hvp,
    kfac_factors,
)
from fnn.derivatives import jacobian, value_and_grad
from fnn.extensions import (
    clipped_grad,
    gradient_statistics,
    per_example_grad_norms,
    per_example_grads,
    trace,
)
from fnn.io import load, save
from fnn.network import MLP, apply, forward, init, summary

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "activations",
    "apply",
    "backprop",
    "clipped_grad",
    "cost_model",
    "curvature",
    "derivatives",
    "distributed",
    "extensions",
    "forward",
    "forward_mode",
    "ggn_diagonal",
    "ggn_vp",
    "gradcheck",
    "gradient_statistics",
    "graph",
    "hessian",
    "hessian_diagonal",
    "hvp",
    "init",
    "jacobian",
    "jacobians",
    "kfac_factors",
    "layer",
    "load",
    "losses",
    "numerical",
    "optim",
    "per_example_grad_norms",
    "per_example_grads",
    "save",
    "summary",
    "symmetry",
    "trace",
    "training",
    "value_and_grad",
]
