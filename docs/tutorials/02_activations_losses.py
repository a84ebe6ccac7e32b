# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Activations and losses, their derivatives and Jacobians
#
# Backpropagation multiplies local derivatives. Before the chain, the links: every
# activation $f$ with its derivative $f'$ written by hand (S6), the output activations and
# the stable softmax (S7), and the explicit Jacobian of every building block of a network —
# losses, activations, the affine map (S16). Each one is checked here against JAX's own
# differentiation; fnn's tests add central differences in float64.

# %%
import textwrap

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

import fnn
from fnn import activations, layer, local_jacobians, losses

# %% [markdown]
# ## S6 — hidden activations, each with its hand-written derivative
#
# [`fnn.activations.get(name)`][fnn.activations.get] returns an
# [`Activation`][fnn.activations.Activation]: `.fn(a)`, `.derivative(a)` (elementwise
# $f'$) and `.jacobian(a)` (the dense matrix), defined side by side in
# `src/fnn/activations.py`, the way micrograd keeps each local derivative next to its
# operation. None of them calls `jax.grad`.

# %%
print(textwrap.fill(", ".join(activations.names()), 88))

a = jnp.linspace(-3, 3, 601)
fig, axes = plt.subplots(2, 6, figsize=(15, 4.6), sharex=True)
for ax_f, ax_d, name in zip(
    axes[0], axes[1], ["sigmoid", "tanh", "relu", "softplus", "elu", "gelu"]
):
    act = activations.get(name)
    ax_f.plot(a, act.fn(a), color="tab:blue")
    ax_f.set_title(name)
    ax_d.plot(a, act.derivative(a), color="tab:red", label="f′ by hand")
    ax_d.plot(a[::40], jax.vmap(jax.grad(act.fn))(a[::40]), "k.", label="jax.grad")
axes[0, 0].set_ylabel("f(a)")
axes[1, 0].set_ylabel("f′(a)")
axes[1, 0].legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# The same comparison as numbers, for the whole zoo, at points away from the kinks (the
# largest absolute difference between the hand-written $f'$ and `jax.grad` of $f$):

# %%
a = jnp.array([-2.5, -1.3, -0.4, 0.3, 0.9, 2.2])
print(f"{'activation':<11} {'max |f′ − jax.grad f|':>22}")
for name in activations.names():
    act = activations.get(name)
    if not act.elementwise:
        continue
    p = dict(act.params)  # PReLU's alpha at its initial value 0.25
    by_jax = jax.vmap(jax.grad(lambda t, act=act, p=p: act.fn(t, **p)))(a)
    print(f"{name:<11} {float(jnp.abs(act.derivative(a, **p) - by_jax).max()):>22.1e}")

# %% [markdown]
# ### Kinks: where f′ does not exist, a convention
#
# ReLU, leaky ReLU, PReLU and hard tanh have kinks. fnn fixes the value there (and says
# so in the docstring): ReLU′(0) = 0 (as `jax.nn.relu`), LeakyReLU′(0) = PReLU′(0) = α (the
# left branch's slope), hard_tanh′(±1) = 0.

# %%
for name in ["relu", "leaky_relu", "prelu", "hard_tanh"]:
    act = activations.get(name)
    kinks = jnp.array([-1.0, 0.0, 1.0])
    print(f"{name:<10} f′ at (−1, 0, 1): {act.derivative(kinks, **dict(act.params))}")

# %% [markdown]
# ### PReLU: an activation with a learnable parameter
#
# $\mathrm{PReLU}(a) = a$ for $a > 0$ and $αa$ otherwise, with α a parameter of the network
# (stored next to `W` and `b`, initialised to 0.25). It gets a gradient too:
# $∂f/∂α = \min(a, 0)$.

# %%
prelu = activations.get("prelu")
a = jnp.array([-2.0, -0.5, 1.0])
print("∂f/∂α by hand:", prelu.param_derivatives["alpha"](a, alpha=0.25))
print("by jax.grad:  ", jax.vmap(jax.grad(prelu.fn, argnums=1), in_axes=(0, None))(a, 0.25))
net = fnn.MLP((2, 3, 1), ("prelu", "identity"))
print(
    "PReLU layer parameters:", {k: v.shape for k, v in fnn.init(jax.random.key(0), net)[0].items()}
)

# %% [markdown]
# ## S7 — output activations and the stable softmax
#
# $\mathrm{softmax}(a)_i = e^{a_i} / \sum_j e^{a_j}$ overflows for large $a$ if written like
# that. Since softmax is invariant to a shift, $\mathrm{softmax}(a) = \mathrm{softmax}(a + c)$,
# fnn computes $\mathrm{softmax}(a - \max_j a_j)$, where the largest exponent is $e^0 = 1$.

# %%
softmax = activations.get("softmax")
a = jnp.array([1.0, 2.0, 3.0])
print("softmax(a)       =", softmax.fn(a))
print("softmax(a + 100) =", softmax.fn(a + 100.0))
big = jnp.array([1000.0, 1001.0, 1002.0])
naive = jnp.exp(big) / jnp.exp(big).sum()
print("naive at a + 999:", naive, "  stable:", softmax.fn(big))

# %% [markdown]
# ## S16 — the Jacobian of every building block
#
# ### Elementwise activations and softmax
#
# An elementwise $f$ has a diagonal Jacobian $J_f(a) = \mathrm{diag}(f'(a_i))$; softmax does
# not: $J = \mathrm{diag}(s) - s s^\top$. Both against `jax.jacfwd`:

# %%
a = jnp.array([0.3, -1.2, 2.0])
for name in ["tanh", "softmax"]:
    act = activations.get(name)
    J = act.jacobian(a)
    print(
        f"{name}: J_f =\n{J}\n  max |J − jax.jacfwd(f)| = "
        f"{float(jnp.abs(J - jax.jacfwd(act.fn)(a)).max()):.1e}"
    )
s = softmax.fn(a)
print(
    "diag(s) − s sᵀ equals it:",
    bool(jnp.allclose(jnp.diag(s) - jnp.outer(s, s), softmax.jacobian(a))),
)

# %% [markdown]
# ### Losses: the row vector J_L = ∂L/∂ŷ
#
# [`fnn.losses.get(name)`][fnn.losses.get] returns a [`Loss`][fnn.losses.Loss] with `.fn`
# and `.jacobian`. The lecture's rows:
#
# * `l2`: $L = \sum_i (\hat y_i - y_i)^2$, $J_L = [2(\hat y_i - y_i)]$;
# * `l1`: $L = \sum_i \lvert\hat y_i - y_i\rvert$, $J_L = [\mathrm{sign}(\hat y_i - y_i)]$
#   with sign(0) = 0;
# * `cross_entropy` (on probabilities, after a softmax output): $L = -\log \hat y_y$,
#   $J_L = [0, \dots, -1/\hat y_y, \dots, 0]$;
# * `softmax_cross_entropy` (on logits, fused and stable): $L = -\log s(\hat y)_y$ with
#   $s = \mathrm{softmax}$, $J_L = s(\hat y) - \mathrm{onehot}(y)$;
# * `binary_cross_entropy` (after a sigmoid output):
#   $L = -\sum_i [y_i \log\hat y_i + (1-y_i)\log(1-\hat y_i)]$,
#   $J_L = [(\hat y_i - y_i) / (\hat y_i(1-\hat y_i))]$.

# %%
y_hat = jnp.array([0.2, 0.7, 0.1])
cases = {
    "l2": jnp.array([0.0, 1.0, 0.0]),
    "l1": jnp.array([0.2, 1.0, 0.0]),  # a zero residual: sign(0) = 0
    "cross_entropy": jnp.array(1),  # a class label
    "softmax_cross_entropy": jnp.array(1),
    "binary_cross_entropy": jnp.array([0.0, 1.0, 0.0]),
}
for name, y in cases.items():
    loss = losses.get(name)
    J = loss.jacobian(y_hat, y)
    by_jax = jax.grad(loss.fn)(y_hat, y)
    print(f"{name:<22} J_L = {J}   max |J_L − jax.grad L| = {float(jnp.abs(J - by_jax).max()):.1e}")

# %% [markdown]
# At the kink of L1 the hand-written row says 0 (sign(0) = 0), as the lecture defines it;
# `jax.grad` of `jnp.abs` picks 1 there. Both are valid subgradients — and the reason a
# gradient check must know where the kinks are ([tutorial 5](05_gradient_checking.html)).

# %% [markdown]
# ### The affine map a = Wx + b: three Jacobians
#
# With respect to the input, $J_a(x) = W$; to the bias, $J_a(b) = I$; to the weights, a
# third-order tensor $J_a(W) = I \otimes x$ with $∂a_i/∂w_{kl} = δ_{ik} x_l$. Backprop never
# builds the last one: a row vector $δ$ times it is the outer product $δ \otimes x$
# ([`local_jacobians.row_times`][fnn.local_jacobians.row_times]).

# %%
W = jax.random.normal(jax.random.key(1), (2, 3))
b = jnp.array([0.5, -0.5])
x = jnp.array([1.0, 2.0, 3.0])
affine = lambda W, b, x: W @ x + b  # noqa: E731

J_x = local_jacobians.affine_x(W)
J_b = local_jacobians.affine_b(b)
J_W = local_jacobians.affine_W(W, x)
print("J_a(x) = W:", bool(jnp.allclose(J_x, jax.jacfwd(affine, argnums=2)(W, b, x))))
print("J_a(b) = I:", bool(jnp.allclose(J_b, jax.jacfwd(affine, argnums=1)(W, b, x))))
print(
    "J_a(W) shape",
    J_W.shape,
    "= I ⊗ x:",
    bool(jnp.allclose(J_W, jax.jacfwd(affine, argnums=0)(W, b, x))),
)
print("J_a(W)[0] =\n", J_W[0], "\n(row 0 of a depends only on row 0 of W, with weights x)")
delta = jnp.array([0.1, -2.0])
print(
    "δ · J_a(W) = δ ⊗ x:",
    bool(jnp.allclose(local_jacobians.row_times(delta, J_W), jnp.outer(delta, x))),
)

# %% [markdown]
# ### S15 — the chain rule is a matrix product
#
# $J_{g∘f}(x) = J_g(f(x))\,J_f(x)$. One layer $z = f(Wx + b)$ has the Jacobian
# $J_f(a) \cdot W$ ([`layer.jacobian`][fnn.layer.jacobian], from the layer's forward cache
# [`layer.forward`][fnn.layer.forward]), and a network's is the
# product of its layers' — read from the right ([tutorial 4](04_forward_vs_reverse.html)) or
# from the left ([tutorial 3](03_backprop_by_hand.html)).

# %%
layer_params = {"W": W, "b": b}
_, cache = layer.forward(layer_params, "tanh", x)  # Cache(z_prev=x, a, z)
J_layer = layer.jacobian(layer_params, "tanh", cache)
J_chain = local_jacobians.chain(activations.get("tanh").jacobian(W @ x + b), W)
by_jax = jax.jacfwd(lambda x: jnp.tanh(W @ x + b))(x)
print(
    J_layer,
    "\nchain:",
    bool(jnp.allclose(J_layer, J_chain)),
    " jax.jacfwd:",
    bool(jnp.allclose(J_layer, by_jax)),
)

# %% [markdown]
# ## Your own activation: SiLU as a record
#
# An activation is a record of functions, so a new one is one call to
# [`activations.elementwise`][fnn.activations.elementwise] with $f$, $f'$ and $f''$ written
# by hand. SiLU (swish), $f(a) = a\,σ(a)$:
#
# $$f'(a) = σ(a)\,(1 + a\,σ(-a)), \qquad f''(a) = σ(a)\,σ(-a)\,\bigl(2 + a\,(σ(-a) - σ(a))\bigr).$$
#
# It has no kink and no sign symmetry, so `kinks=()` and `flip_offset=None` (the defaults).
# Before it goes into a network, its derivatives meet their witnesses: `jax.grad` and
# central differences ([`fnn.numerical.central_difference`][fnn.numerical.central_difference])
# in float64.

# %%
sig = jax.nn.sigmoid
silu = activations.elementwise(
    "silu",
    lambda a: a * sig(a),
    lambda a: sig(a) * (1 + a * sig(-a)),
    lambda a: sig(a) * sig(-a) * (2 + a * (sig(-a) - sig(a))),
)
with jax.enable_x64(True):
    a = jnp.linspace(-4.0, 4.0, 9, dtype=jnp.float64)
    by_jax = jax.vmap(jax.grad(silu.fn))(a)
    by_jax2 = jax.vmap(jax.grad(jax.grad(silu.fn)))(a)
    by_cd = fnn.numerical.central_difference(lambda a: jnp.sum(silu.fn(a)), a)
    print("f′ = jax.grad:", bool(jnp.allclose(silu.derivative(a), by_jax, rtol=1e-12)))
    print("f′ = central differences:", bool(jnp.allclose(silu.derivative(a), by_cd, rtol=1e-6)))
    print("f″ = jax.grad(jax.grad):", bool(jnp.allclose(silu.second_derivative(a), by_jax2)))

# %% [markdown]
# The record goes wherever a name goes: into `MLP`, and so through every engine. A few
# steps of gradient descent on a small regression, with the hand-written backward pass:

# %%
net = fnn.MLP((1, 16, 1), (silu, "identity"))
params = fnn.init(jax.random.key(0), net)
x_train = jnp.linspace(-2.0, 2.0, 32)[:, None]
y_train = jnp.sin(2 * x_train)


@jax.jit
def step(params):
    value, grads = fnn.value_and_grad(net, params, x_train, y_train, loss="l2")
    return value, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads["params"])


for i in range(201):
    value, params = step(params)
    if i % 50 == 0:
        print(f"step {i:3d}  loss {float(value):.4f}")
print(fnn.summary(net))
