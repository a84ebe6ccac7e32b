"""fnn — feed-forward neural networks and backpropagation, every formula a pure JAX function.

The public API (the README's Quick start; the documentation site, ``make docs``, has the
reference and the tutorials)::

    net = fnn.MLP(sizes=(10, 10, 10, 10), activations=("sigmoid", "sigmoid", "identity"))
    params = fnn.init(jax.random.key(0), net)
    y_hat = fnn.apply(net, params, x)
    loss, grads = fnn.value_and_grad(net, params, x, y, loss="l2", method="reverse")
    J = fnn.jacobian(net, params, x, method="auto")                    # S18
    t = fnn.backprop_trace(net, params, x, y)                          # S23
    losses_b, grads_b = fnn.per_example_grads(net, params, x, y)        # S24
    Hv = fnn.hvp(net, params, x, y, v)                                  # S27

The calling convention of every function that differentiates (docs/conventions.md):
``f(net, params, x, y[, v], *, loss=..., method=..., <options>)``, everything after the
arrays keyword-only; ``x`` one example ``(D,)`` or a batch ``(B, D)``.

Reading order, one way down the stack: ``activations``/``losses`` (f, f′, f″, J_L, H_L) →
``layer`` (one layer's forward, JVP, VJP and second-order rules) → the engines
(``network``, ``backprop``, ``forward_mode``) → the public entry points (``derivatives``,
``extensions``, ``traces``, ``curvature``, ``training``, ``distributed``, ...).
"""

from fnn import (
    activations,
    backprop,
    cost_model,
    curvature,
    derivatives,
    distributed,
    draw,
    extensions,
    forward_mode,
    gauss_newton,
    gradcheck,
    graph,
    hessian_backprop,
    homework,
    layer,
    local_jacobians,
    losses,
    numerical,
    optim,
    symmetry,
    testing,
    traces,
    training,
)
from fnn.curvature import (
    ggn_diagonal,
    ggn_vp,
    hessian,
    hessian_diagonal,
    hvp,
    kfac_factors,
    per_example_ggn_diagonal,
    per_example_hessian_diagonal,
)
from fnn.derivatives import jacobian, value_and_grad
from fnn.extensions import (
    clipped_grad,
    gradient_statistics,
    per_example_grad_norms,
    per_example_grads,
)
from fnn.io import load, save
from fnn.network import MLP, apply, forward_pass, init, summary
from fnn.traces import backprop_trace

__version__ = "0.1.0"

# What a user calls. The modules (fnn.activations, fnn.losses, fnn.layer, fnn.backprop, …)
# stay importable as attributes of the package, for reading down the stack.
__all__ = [
    "MLP",
    "apply",
    "backprop_trace",
    "clipped_grad",
    "forward_pass",
    "ggn_diagonal",
    "ggn_vp",
    "gradient_statistics",
    "hessian",
    "hessian_diagonal",
    "hvp",
    "init",
    "jacobian",
    "kfac_factors",
    "load",
    "per_example_ggn_diagonal",
    "per_example_grad_norms",
    "per_example_grads",
    "per_example_hessian_diagonal",
    "save",
    "summary",
    "value_and_grad",
]
