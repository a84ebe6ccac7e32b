r"""The built-in losses' formulas: L, J_L, H_L, H_L v, a factor S of H_L and a sampled
gradient of each, side by side (S16, S26, S28).

Pure functions of one example ``(ŷ, y)``, written by hand with the lecture's formula; the
first function of each group (the loss) states the group's formulas and the numerics that
keep them finite. :mod:`fnn.losses` makes the records
(:class:`fnn.losses.Loss`), guards their targets' domain and builds the registry from them;
read the contract there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnn import activations

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_hessian",
    "binary_cross_entropy_hessian_sqrt",
    "binary_cross_entropy_hessian_vp",
    "binary_cross_entropy_jacobian",
    "cross_entropy",
    "cross_entropy_hessian",
    "cross_entropy_hessian_sqrt",
    "cross_entropy_hessian_vp",
    "cross_entropy_jacobian",
    "float_dtype",
    "l1",
    "l1_hessian",
    "l1_hessian_sqrt",
    "l1_hessian_vp",
    "l1_jacobian",
    "l2",
    "l2_hessian",
    "l2_hessian_sqrt",
    "l2_hessian_vp",
    "l2_jacobian",
    "l2_sample_gradient",
    "logsumexp",
    "one_hot",
    "sigmoid",
    "sigmoid_binary_cross_entropy",
    "sigmoid_binary_cross_entropy_hessian",
    "sigmoid_binary_cross_entropy_hessian_sqrt",
    "sigmoid_binary_cross_entropy_hessian_vp",
    "sigmoid_binary_cross_entropy_jacobian",
    "sigmoid_binary_cross_entropy_sample_gradient",
    "sigmoid_curvature",
    "softmax_cross_entropy",
    "softmax_cross_entropy_hessian",
    "softmax_cross_entropy_hessian_sqrt",
    "softmax_cross_entropy_hessian_vp",
    "softmax_cross_entropy_jacobian",
    "softmax_cross_entropy_sample_gradient",
    "xdivy",
    "xlog1py",
    "xlogy",
]


def float_dtype(x):
    """The float dtype of ``x`` (integer inputs give the default float)."""
    return jnp.result_type(x, float)


def l2(y_hat, y):
    """The squared error ``L2(ŷ, y) = Σᵢ (ŷᵢ − yᵢ)²``."""
    return jnp.sum((y_hat - y) ** 2)


def l2_jacobian(y_hat, y):
    """L2's Jacobian ``J_L = [2(ŷᵢ − yᵢ)]``."""
    return 2 * (y_hat - y)


def l2_hessian(y_hat, y):
    """L2's Hessian ``H_L = 2I``, whatever ``ŷ`` and ``y``."""
    del y
    return 2 * jnp.eye(y_hat.shape[-1], dtype=float_dtype(y_hat))


def l2_hessian_vp(y_hat, y, v):
    """L2's Hessian times ``v``: ``H_L v = 2v``."""
    del y_hat, y
    return 2 * v


def l2_hessian_sqrt(y_hat, y):
    """A factor ``S = √2 I`` of L2's Hessian, ``S Sᵀ = 2I = H_L``."""
    return jnp.sqrt(2.0).astype(float_dtype(y_hat)) * jnp.eye(
        y_hat.shape[-1], dtype=float_dtype(y_hat)
    )


def l2_sample_gradient(y_hat, key):
    """A sampled gradient of L2 with ``E[g gᵀ] = H_L = 2I``: ``g = −√2 ε``, ``ε ~ N(0, I)``.

    L2 is ``−log N(y; ŷ, ½I)`` up to a constant: a target ``ỹ = ŷ + ε``, ``ε ~ N(0, ½I)``, has the
    gradient ``2(ŷ − ỹ) = −2ε``, and ``E[4 ε εᵀ] = 2I = H_L``.
    """
    return -jnp.sqrt(2.0).astype(float_dtype(y_hat)) * jax.random.normal(
        key, y_hat.shape, y_hat.dtype
    )


def l1(y_hat, y):
    """The absolute error ``L1(ŷ, y) = Σᵢ |ŷᵢ − yᵢ|``.

    Its ``J_L = [sign(ŷᵢ − yᵢ)]`` with ``sign(0) = 0``, as the lecture defines it (``jnp.sign``
    does), and ``H_L = 0`` (at the kink too). ``|d|`` is written ``sign(d) · d``: its JAX derivative
    ``sign(d) + d · 0`` is that sign, where ``jnp.abs``'s would be 1 at ``d = 0``.
    """
    d = y_hat - y
    return jnp.sum(jnp.sign(d) * d)


def l1_jacobian(y_hat, y):
    """L1's Jacobian ``J_L = [sign(ŷᵢ − yᵢ)]``, with ``sign(0) = 0``."""
    return jnp.sign(y_hat - y)


def l1_hessian(y_hat, y):
    """L1's Hessian ``H_L = 0`` (at the kink too)."""
    del y
    return jnp.zeros((y_hat.shape[-1],) * 2, float_dtype(y_hat))


def l1_hessian_vp(y_hat, y, v):
    """L1's Hessian times ``v``: ``H_L v = 0``."""
    del y_hat, y
    return jnp.zeros_like(v)


def l1_hessian_sqrt(y_hat, y):
    """A factor of L1's Hessian ``H_L = 0``: the zero matrix."""
    return l1_hessian(y_hat, y)


def one_hot(y, n):
    """``[0, …, 1, …, 0]`` of length ``n`` with the 1 at the label ``y`` (a bool mask)."""
    return jnp.arange(n) == y


def cross_entropy(y_hat, y):
    """Cross-entropy on probabilities ``p = ŷ`` (a softmax's output) and an integer label ``y``:
    ``L_ce(p, y) = −log p(ŷ = y | x) = −log p_y``.

    Its ``J_L = [0, …, −1/p_y, …, 0]`` and ``H_L = diag(onehot(y) / p_y²)`` (the one entry
    ``1/p_y²`` at ``(y, y)``).
    """
    return -jnp.log(y_hat[y])


def cross_entropy_jacobian(y_hat, y):
    """Cross-entropy's Jacobian ``J_L = [0, …, −1/p_y, …, 0]``."""
    return jnp.where(one_hot(y, y_hat.shape[-1]), -1 / y_hat[y], 0)


def cross_entropy_hessian_vp(y_hat, y, v):
    """Cross-entropy's Hessian times ``v``: ``v_y / p_y²`` at the label, 0 elsewhere."""
    return jnp.where(one_hot(y, y_hat.shape[-1]), v / y_hat[y] ** 2, 0)


def cross_entropy_hessian(y_hat, y):
    """Cross-entropy's Hessian ``H_L = diag(onehot(y) / p_y²)``."""
    return jnp.diag(cross_entropy_hessian_vp(y_hat, y, jnp.ones_like(y_hat)))


def cross_entropy_hessian_sqrt(y_hat, y):
    """A factor ``S = diag(onehot(y) / p_y)`` of cross-entropy's Hessian: ``(1/p_y)²`` is
    ``H_L``'s entry."""
    return jnp.diag(jnp.where(one_hot(y, y_hat.shape[-1]), 1 / y_hat[y], 0))


def logsumexp(a):
    """``logsumexp(a) = m + log Σⱼ e^{aⱼ − m}`` over the last axis, with ``m = max a``.

    The shift of S7: no overflow; ``m`` carries no derivative, hence ``stop_gradient``: ``jax.grad``
    of :func:`softmax_cross_entropy` gives exactly ``s − onehot(y)``.
    """
    m = jax.lax.stop_gradient(jnp.max(a, axis=-1))
    return m + jnp.log(jnp.sum(jnp.exp(a - m[..., None]), axis=-1))


def softmax_cross_entropy(y_hat, y):
    """Softmax cross-entropy on logits ``ŷ``, fused: ``L = −log softmax(ŷ)_y = logsumexp(ŷ) − ŷ_y``.

    Its ``J_L = softmax(ŷ) − onehot(y)`` (``= J_ce(softmax(ŷ)) · J_softmax(ŷ)``, tested) and ``H_L =
    J_softmax(ŷ) = diag(s) − s sᵀ``, whatever the label.
    """
    return logsumexp(y_hat) - y_hat[y]


def softmax_cross_entropy_jacobian(y_hat, y):
    """Softmax cross-entropy's Jacobian ``J_L = softmax(ŷ) − onehot(y)``."""
    s = activations.get("softmax").fn(y_hat)
    return s - one_hot(y, y_hat.shape[-1]).astype(s.dtype)


def softmax_cross_entropy_hessian(y_hat, y):
    """Softmax cross-entropy's Hessian ``H_L = diag(s) − s sᵀ`` with ``s = softmax(ŷ)``, whatever
    the label."""
    del y
    return activations.get("softmax").jacobian(y_hat)


def softmax_cross_entropy_hessian_vp(y_hat, y, v):
    """Softmax cross-entropy's Hessian times ``v``: ``(diag(s) − s sᵀ) v``, without building the
    matrix."""
    del y
    return activations.jvp(activations.get("softmax"), y_hat, v)


def softmax_cross_entropy_hessian_sqrt(y_hat, y):
    """A factor ``S = diag(√s) − s √sᵀ`` of softmax cross-entropy's Hessian.

    ``S Sᵀ = diag(s) − 2 s sᵀ + s (Σⱼ sⱼ) sᵀ = diag(s) − s sᵀ``, as ``Σⱼ sⱼ = 1``.
    """
    del y
    s = activations.get("softmax").fn(y_hat)
    r = jnp.sqrt(s)
    return jnp.diag(r) - s[:, None] * r[None, :]


def softmax_cross_entropy_sample_gradient(y_hat, key):
    """A sampled gradient ``s − onehot(ỹ)`` of softmax cross-entropy, with a label ``ỹ`` drawn from
    ``softmax(ŷ)``.

    ``−log softmax(ŷ)_y`` is the negative log-likelihood of a categorical distribution: ``E[(s −
    e_ỹ)(s − e_ỹ)ᵀ] = diag(s) − s sᵀ = H_L``.
    """
    label = jax.random.categorical(key, y_hat)
    return softmax_cross_entropy_jacobian(y_hat, label)


def xlogy(x, y):
    """``x log y`` with ``0 log y = 0``, and derivative ``0`` there."""
    zero = x == 0
    return jnp.where(zero, 0, x * jnp.log(jnp.where(zero, 1, y)))


def xlog1py(x, y):
    """``x log(1 + y)`` with ``0 log(1 + y) = 0``, and derivative ``0`` there."""
    zero = x == 0
    return jnp.where(zero, 0, x * jnp.log1p(jnp.where(zero, 0, y)))


def xdivy(x, d):
    """``x / d`` with ``0 / d = 0`` for every ``d`` (0 / 0 included)."""
    zero = x == 0
    return jnp.where(zero, 0, x / jnp.where(zero, 1, d))


def binary_cross_entropy(y_hat, y):
    """Binary cross-entropy on probabilities ``ŷ ∈ [0, 1]`` (after a sigmoid), targets ``y ∈ [0,
    1]``: ``L = −Σᵢ [yᵢ log ŷᵢ + (1 − yᵢ) log(1 − ŷᵢ)]``.

    Its ``J_L = [−yᵢ/ŷᵢ + (1 − yᵢ)/(1 − ŷᵢ)] = [(ŷᵢ − yᵢ) / (ŷᵢ (1 − ŷᵢ))]`` for ``0 < ŷᵢ < 1`` and
    ``H_L = diag(yᵢ/ŷᵢ² + (1 − yᵢ)/(1 − ŷᵢ)²)``. The first forms, with ``0 · log 0 = 0`` and ``0 / 0
    = 0``, stay finite where a float32 sigmoid saturates to ``ŷ = 1`` with ``y = 1`` (``J = −1``,
    ``H = 1``), where the second form gives ``0 / 0``. The loss is written with :func:`xlogy`, ``x
    log y`` that is 0 for ``x = 0`` in value AND derivative (the inner ``where`` keeps ``log`` away
    from 0): ``jax.grad`` of it is ``J_L`` there too (jax.scipy's ``xlogy`` gives NaN).
    """
    return -jnp.sum(xlogy(y, y_hat) + xlog1py(1 - y, -y_hat))


def binary_cross_entropy_jacobian(y_hat, y):
    """Binary cross-entropy's Jacobian ``J_L = [−yᵢ/ŷᵢ + (1 − yᵢ)/(1 − ŷᵢ)]``, with ``0 / 0 =
    0``."""
    return -xdivy(y, y_hat) + xdivy(1 - y, 1 - y_hat)


def binary_cross_entropy_hessian_vp(y_hat, y, v):
    """Binary cross-entropy's Hessian times ``v``: ``(yᵢ/ŷᵢ² + (1 − yᵢ)/(1 − ŷᵢ)²) vᵢ``."""
    return (xdivy(y, y_hat**2) + xdivy(1 - y, (1 - y_hat) ** 2)) * v


def binary_cross_entropy_hessian(y_hat, y):
    """Binary cross-entropy's Hessian ``H_L = diag(yᵢ/ŷᵢ² + (1 − yᵢ)/(1 − ŷᵢ)²)``."""
    return jnp.diag(binary_cross_entropy_hessian_vp(y_hat, y, jnp.ones_like(y_hat)))


def binary_cross_entropy_hessian_sqrt(y_hat, y):
    """A factor ``S = √H_L`` of binary cross-entropy's diagonal Hessian."""
    return jnp.diag(jnp.sqrt(binary_cross_entropy_hessian_vp(y_hat, y, jnp.ones_like(y_hat))))


def sigmoid_binary_cross_entropy(y_hat, y):
    """Binary cross-entropy on logits ``ŷ`` (the sigmoid fused into the loss), targets ``y``: ``L =
    −Σᵢ [yᵢ log σ(ŷᵢ) + (1 − yᵢ) log σ(−ŷᵢ)] = Σᵢ softplus(ŷᵢ) − yᵢ ŷᵢ``.

    With ``softplus(a) = log(1 + eᵃ) = logaddexp(0, a)``: finite for every ``a`` (``ŷ = 1e4``, ``y =
    0`` gives 1e4, where ``log(1 − σ(1e4)) = log 0 = −∞``). ``J_L = σ(ŷ) − y``; ``H_L = diag(σ(ŷ)
    σ(−ŷ))``, which is ``σ(1 − σ)`` without the cancellation ``1 − σ`` at large ``ŷ``. Linear in
    ``y``, so defined for every real target (meaningful for ``y`` in ``[0, 1]``), as in optax and
    PyTorch's ``BCEWithLogitsLoss``.
    """
    return jnp.sum(jnp.logaddexp(0, y_hat) - y * y_hat)


def sigmoid(a):
    """The logistic sigmoid ``σ(a) = 1 / (1 + e^{−a})``, from the activation registry."""
    return activations.get("sigmoid").fn(a)


def sigmoid_binary_cross_entropy_jacobian(y_hat, y):
    """Sigmoid binary cross-entropy's Jacobian ``J_L = σ(ŷ) − y``."""
    return sigmoid(y_hat) - y


def sigmoid_curvature(y_hat):
    """The diagonal of sigmoid binary cross-entropy's Hessian, ``σ(ŷ) σ(−ŷ)`` (``σ(1 − σ)``
    without the cancellation)."""
    return sigmoid(y_hat) * sigmoid(-y_hat)


def sigmoid_binary_cross_entropy_hessian_vp(y_hat, y, v):
    """Sigmoid binary cross-entropy's Hessian times ``v``: ``σ(ŷ) σ(−ŷ) v``."""
    del y
    return sigmoid_curvature(y_hat) * v


def sigmoid_binary_cross_entropy_hessian(y_hat, y):
    """Sigmoid binary cross-entropy's Hessian ``H_L = diag(σ(ŷ) σ(−ŷ))``, whatever the target."""
    del y
    return jnp.diag(sigmoid_curvature(y_hat))


def sigmoid_binary_cross_entropy_hessian_sqrt(y_hat, y):
    """A factor ``S = diag(√(σ(ŷ) σ(−ŷ)))`` of sigmoid binary cross-entropy's Hessian."""
    del y
    return jnp.diag(jnp.sqrt(sigmoid_curvature(y_hat)))


def sigmoid_binary_cross_entropy_sample_gradient(y_hat, key):
    """A sampled gradient ``σ(ŷ) − ỹ`` of sigmoid binary cross-entropy, with Bernoulli targets ``ỹ ~
    σ(ŷ)``.

    ``E[(σ − ỹ)²] = σ (1 − σ)`` is ``H_L``'s entry.
    """
    draw = jax.random.bernoulli(key, sigmoid(y_hat)).astype(y_hat.dtype)
    return sigmoid(y_hat) - draw
