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
# # 7. Curvature: Hessian-vector products, diagonals, Gauss–Newton, dense Hessians
#
# The lecture stops at the gradient; Bishop 5.4 goes one order further. The same building
# blocks carry second derivatives: $f''$ of every activation and the Hessian $H_L$ of every
# loss (S26), Hessian-vector products by Pearlmutter's R-operator and Gauss–Newton products
# (S27), the exact Hessian diagonal, the Gauss–Newton diagonal and K-FAC's factors (S28),
# and the dense Hessian by the four compositions of forward and reverse mode (S29). Every
# quantity is checked against JAX's own transforms, in float64.

# %%
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import fnn  # noqa: E402


def max_diff(a, b):
    return max(float(jnp.abs(u - v).max()) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# %% [markdown]
# ## S26 — second derivatives of the building blocks, by hand
#
# [`Activation.second_derivative`][fnn.activations.Activation.second_derivative] is $f''$
# elementwise; [`Loss.hessian`][fnn.losses.Loss.hessian] is $H_L(\hat y)$: $2I$ for L2,
# $\mathrm{diag}(s) - s s^\top$ for the softmax cross-entropy on logits.

# %%
a = jnp.linspace(-2.0, 2.0, 9)
for name in ["sigmoid", "tanh", "softplus", "gelu", "sin"]:
    act = fnn.activations.get(name)
    by_jax = jax.vmap(jax.grad(jax.grad(act.fn)))(a)
    print(
        f"{name:<9} max |f″ − jax.grad(jax.grad(f))| = "
        f"{float(jnp.abs(act.second_derivative(a) - by_jax).max()):.1e}"
    )

y_hat = jnp.array([0.3, -1.2, 2.0])
for name, y in [("l2", jnp.array([0.0, 1.0, 0.5])), ("softmax_cross_entropy", jnp.array(2))]:
    loss = fnn.losses.get(name)
    H = loss.hessian(y_hat, y)
    print(
        f"{name}: H_L =\n{np.round(np.asarray(H), 4)}\n  max |H_L − jax.hessian| = "
        f"{float(jnp.abs(H - jax.hessian(loss.fn)(y_hat, y)).max()):.1e}"
    )

# %% [markdown]
# ## S27 — Hessian-vector products
#
# $Hv$ costs a few gradients, never the $P \times P$ matrix: the forward pass also pushes
# $R\lbrace a\rbrace, R\lbrace z\rbrace$, the backward pass pulls $R\lbrace δ\rbrace$
# (Bishop 5.4.6).

# %% [markdown]
# ### The R-operator, derived on a 2-2-1 network, number by number
#
# Pearlmutter's idea: $Hv$ is the directional derivative of the gradient,
# $Hv = \frac{d}{dt} ∇L(θ + t v)\big|_{t=0}$. Write $R\lbrace \cdot\rbrace$ for that
# derivative of any quantity of the passes; then $R\lbrace θ\rbrace = v$,
# $R\lbrace x\rbrace = R\lbrace y\rbrace = 0$, and $R$ obeys the product and chain rules.
# Apply it to every line of the forward and the backward pass.
# A network with two tanh hidden units, a linear output and $L = (\hat y - y)^2$, one
# example, and a direction $v = (V^{(1)}, c^{(1)}, V^{(2)}, c^{(2)})$:

# %%
W1, b1 = np.array([[0.5, -0.3], [0.2, 0.8]]), np.array([0.1, -0.2])
W2, b2 = np.array([[0.7, -0.4]]), np.array([0.3])
x1, y1 = np.array([1.0, 0.5]), np.array([0.2])
V1, c1 = np.array([[1.0, 0.0], [0.0, -1.0]]), np.array([0.5, 0.0])
V2, c2 = np.array([[0.0, 1.0]]), np.array([-0.5])
f, f1, f2 = (
    np.tanh,
    lambda a: 1 - np.tanh(a) ** 2,
    lambda a: -2 * np.tanh(a) * (1 - np.tanh(a) ** 2),
)
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# **Forward, and $R$ of it.** $a^{(1)} = W^{(1)}x + b^{(1)}$ gives
# $R\lbrace a^{(1)}\rbrace = V^{(1)} x + c^{(1)}$ (x is data: $R\lbrace x\rbrace = 0$);
# $z^{(1)} = f(a^{(1)})$ gives
# $R\lbrace z^{(1)}\rbrace = f'(a^{(1)}) \odot R\lbrace a^{(1)}\rbrace$;
# $\hat y = W^{(2)} z^{(1)} + b^{(2)}$ gives, by the product rule,
# $R\lbrace \hat y\rbrace = W^{(2)} R\lbrace z^{(1)}\rbrace + V^{(2)} z^{(1)} + c^{(2)}$.

# %%
a1 = W1 @ x1 + b1
z1 = f(a1)
y_hat1 = W2 @ z1 + b2
Ra1 = V1 @ x1 + c1
Rz1 = f1(a1) * Ra1
Ry_hat = W2 @ Rz1 + V2 @ z1 + c2
print(f"a¹ = {a1},  z¹ = {z1},  ŷ = {y_hat1}")
print(f"R{{a¹}} = {Ra1},  R{{z¹}} = {Rz1},  R{{ŷ}} = {Ry_hat}")

# %% [markdown]
# **Backward, and $R$ of it.** $δ^{(2)} = 2(\hat y - y)$ gives
# $R\lbrace δ^{(2)}\rbrace = 2 R\lbrace \hat y\rbrace = H_L R\lbrace \hat y\rbrace$;
# $∂L/∂z^{(1)} = W^{(2)\top} δ^{(2)}$ gives
# $R\lbrace ∂L/∂z^{(1)}\rbrace = W^{(2)\top} R\lbrace δ^{(2)}\rbrace + V^{(2)\top} δ^{(2)}$;
# $δ^{(1)} = f'(a^{(1)}) \odot ∂L/∂z^{(1)}$ gives the one new term of second order,
#
# $$
# R\lbrace δ^{(1)}\rbrace = f''(a^{(1)}) \odot R\lbrace a^{(1)}\rbrace \odot ∂L/∂z^{(1)} +
# f'(a^{(1)}) \odot R\lbrace ∂L/∂z^{(1)}\rbrace .
# $$

# %%
d2 = 2 * (y_hat1 - y1)
Rd2 = 2 * Ry_hat
g1 = W2.T @ d2
Rg1 = W2.T @ Rd2 + V2.T @ d2
d1 = f1(a1) * g1
Rd1 = f2(a1) * Ra1 * g1 + f1(a1) * Rg1
print(f"δ² = {d2},  R{{δ²}} = {Rd2}")
print(f"∂L/∂z¹ = {g1},  R{{∂L/∂z¹}} = {Rg1}")
print(f"δ¹ = {d1},  R{{δ¹}} = {Rd1}")

# %% [markdown]
# **The gradient, and $R$ of it: that is $Hv$.** $∂L/∂W^{(i)} = δ^{(i)} z^{(i-1)\top}$ gives
# $R\lbrace ∂L/∂W^{(i)}\rbrace = R\lbrace δ^{(i)}\rbrace z^{(i-1)\top} +
# δ^{(i)} R\lbrace z^{(i-1)}\rbrace^\top$ (the second term vanishes for $i = 1$:
# $R\lbrace x\rbrace = 0$), and $R\lbrace ∂L/∂b^{(i)}\rbrace = R\lbrace δ^{(i)}\rbrace$.
# One forward and one backward pass, each about twice the work of the plain one: $Hv$ at a
# few times the cost of a gradient, and no $P \times P$ matrix. Against
# [`fnn.hvp`][fnn.hvp]:

# %%
Hv_hand = [
    {"W": np.outer(Rd1, x1), "b": Rd1},
    {"W": np.outer(Rd2, z1) + np.outer(d2, Rz1), "b": Rd2},
]
net221 = fnn.MLP((2, 2, 1), ("tanh", "identity"))
p221 = [{"W": jnp.array(W1), "b": jnp.array(b1)}, {"W": jnp.array(W2), "b": jnp.array(b2)}]
v221 = [{"W": jnp.array(V1), "b": jnp.array(c1)}, {"W": jnp.array(V2), "b": jnp.array(c2)}]
Hv_fnn = fnn.hvp(net221, p221, jnp.array(x1)[None], jnp.array(y1)[None], v221, loss="l2")
for i, hand in enumerate(Hv_hand, start=1):
    print(f"layer {i}: R{{∂L/∂W}} = {hand['W'].ravel()}, R{{∂L/∂b}} = {hand['b']}")
print(f"max |by hand − fnn.hvp|: {max_diff(Hv_hand, Hv_fnn):.1e}")

# %% [markdown]
# ### The Hessian by backpropagation, one layer
#
# The same bookkeeping, one order up, gives the Hessian itself (Bishop 5.4.1–5.4.2). Let
# $H_a^{(i)} = ∂^2 L/∂a^{(i)}∂a^{(i)}$. At the output $H_a^{(2)} = H_L = 2I$. One layer
# down, the chain rule at second order has two terms: the curvature carried through the
# Jacobians, and the curvature of $f$ itself, weighted by the gradient there:
#
# $$
# H_a^{(1)} = \operatorname{diag}(f'(a^{(1)}))\, W^{(2)\top} H_a^{(2)} W^{(2)}\,
# \operatorname{diag}(f'(a^{(1)})) + \operatorname{diag}\big(f''(a^{(1)}) \odot
# ∂L/∂z^{(1)}\big).
# $$
#
# Since $a^{(1)}$ is linear in $W^{(1)}$, the layer's weight block is then
# $∂^2 L/∂W^{(1)}∂W^{(1)} = H_a^{(1)} \otimes x x^\top$ (rows of $W^{(1)}$ in order):

# %%
Ha2 = 2 * np.eye(1)
Ha1 = np.diag(f1(a1)) @ W2.T @ Ha2 @ W2 @ np.diag(f1(a1)) + np.diag(f2(a1) * g1)
block = np.kron(Ha1, np.outer(x1, x1))
print(f"H_a¹ =\n{Ha1}")


def loss_of_W1(W):
    y_out = jnp.array(W2) @ jnp.tanh(W @ jnp.array(x1) + jnp.array(b1)) + jnp.array(b2)
    return jnp.sum((y_out - jnp.array(y1)) ** 2)


H_W1 = jax.hessian(loss_of_W1)(jnp.array(W1)).reshape(4, 4)
print(f"max |H_a¹ ⊗ x xᵀ − jax.hessian w.r.t. W¹|: {float(np.abs(block - H_W1).max()):.1e}")

# %% [markdown]
# The second term is what the Gauss–Newton matrix leaves out: drop
# $\operatorname{diag}(f'' \odot ∂L/∂z)$ and every $H_a$ is positive semi-definite.
# [`fnn.hvp`][fnn.hvp] does all of this in its two passes without forming any $H_a$;
# the diagonals and blocks of S28 below form only the small ones.
#
# ### A bigger network
#
# On a $4 \to 12 \to 12 \to 3$ network and a batch, [`fnn.hvp`][fnn.hvp] against `jax.jvp`
# of `jax.grad` (forward-over-reverse):

# %%
net = fnn.MLP((4, 12, 12, 3), ("tanh", "softplus", "identity"))
params = fnn.init(jax.random.key(0), net)
x = jax.random.normal(jax.random.key(1), (16, 4))
y = jax.random.normal(jax.random.key(2), (16, 3))
v = jax.tree.map(lambda p: jax.random.normal(jax.random.key(3), p.shape), params)


def L(p):
    return fnn.gradcheck.network_loss(net, p, x, y, loss="l2")


Hv = fnn.hvp(net, params, x, y, v, loss="l2")
by_jax = jax.jvp(jax.grad(L), (params,), (v,))[1]
print("max |hvp − jvp(grad)|:", max_diff(Hv, by_jax))

# %% [markdown]
# [`gradcheck.check_hvp`][fnn.gradcheck.check_hvp] is the independent witness: central
# differences of the gradient along $v$, $(∇L(θ + hv) - ∇L(θ - hv)) / 2h$, entry by entry
# (Bishop 5.4.4). The R-operator is forward-over-reverse written out by hand; `method=`
# gives the other compositions of [`fnn.hvp`][fnn.hvp], and
# [`cost_model.hvp_macs`][fnn.cost_model.hvp_macs] counts what each costs against one
# gradient:

# %%
print(fnn.gradcheck.check_hvp(net, params, x, y, v, Hv))
grad_macs = fnn.cost_model.gradient_macs(net, "reverse")
for method in fnn.curvature.HVP_METHODS:
    Hv_m = fnn.hvp(net, params, x, y, v, loss="l2", method=method)
    print(
        f"{method:<13} max |Hv − R-operator| = {max_diff(Hv_m, Hv):.1e}, "
        f"MACs = {fnn.cost_model.hvp_macs(net, method) / grad_macs:6.2f} gradients"
    )

# %% [markdown]
# The Gauss–Newton product splits the network at its output: with $J = ∂\hat y/∂θ$ and
# $H_L = ∂^2 L/∂\hat y^2$, $G v = J^\top H_L J v$ — one forward tangent, one multiplication
# by $H_L$, one backward pass. [`fnn.ggn_vp`][fnn.ggn_vp] against its definition:

# %%
Gv = fnn.ggn_vp(net, params, x, y, v, loss="l2")


def ggn_by_definition(p, v):
    f = lambda p: fnn.apply(net, p, x)  # noqa: E731
    _, Jv = jax.jvp(f, (p,), (v,))
    HJv = 2.0 * Jv / x.shape[0]  # L2: H_L = 2I per example; the batch mean's 1/B
    return jax.vjp(f, p)[1](HJv)[0]


print("max |ggn_vp − Jᵀ H_L J v|:", max_diff(Gv, ggn_by_definition(params, v)))

# %% [markdown]
# ## S28 — diagonals and K-FAC factors
#
# The exact Hessian diagonal and the exact Gauss–Newton diagonal come from one backward
# pass of second-order quantities (Bishop 5.4.1–5.4.2, BackPACK's `DiagHessian` and
# `DiagGGNExact`). Against the diagonal of the dense matrices:

# %%
theta, unravel = ravel_pytree(params)
H_dense = jax.hessian(lambda t: L(unravel(t)))(theta)
f_flat = lambda t: fnn.apply(net, unravel(t), x)  # noqa: E731
J_dense = jax.jacrev(f_flat)(theta)  # (B, M, P)
G_dense = 2.0 / x.shape[0] * jnp.einsum("bmp,bmq->pq", J_dense, J_dense)

d_H = fnn.hessian_diagonal(net, params, x, y, loss="l2")
d_G = fnn.ggn_diagonal(net, params, x, y, loss="l2")
print(
    "max |hessian_diagonal − diag(jax.hessian)|:",
    float(jnp.abs(ravel_pytree(d_H)[0] - jnp.diag(H_dense)).max()),
)
print(
    "max |ggn_diagonal − diag(Jᵀ H_L J)|:      ",
    float(jnp.abs(ravel_pytree(d_G)[0] - jnp.diag(G_dense)).max()),
)

# %% [markdown]
# The whole spectra, on a symmetric log scale: the Gauss–Newton matrix is positive
# semi-definite by construction, the Hessian is not — its negative eigenvalues come from
# the $f'' \odot ∂L/∂z$ terms derived above.

# %%
import matplotlib.pyplot as plt  # noqa: E402

eig_H = np.sort(np.linalg.eigvalsh(np.asarray(H_dense)))[::-1]
eig_G = np.sort(np.linalg.eigvalsh(np.asarray(G_dense)))[::-1]
fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.plot(eig_H, ".", label="Hessian H")
ax.plot(eig_G, ".", label="Gauss–Newton G = Jᵀ H_L J")
ax.set_yscale("symlog", linthresh=1e-3)
ax.axhline(0, color="0.6", lw=0.8)
ax.set_xlabel(f"eigenvalue index (P = {theta.size})")
ax.set_ylabel("eigenvalue")
ax.set_title("spectra of the curvature matrices")
ax.legend()
plt.show()
print(f"negative eigenvalues: H {int((eig_H < -1e-10).sum())}, G {int((eig_G < -1e-10).sum())}")

# %% [markdown]
# K-FAC approximates each layer's Gauss–Newton block by a Kronecker product of two small
# matrices: $A = E[\bar z \bar z^\top]$ over the layer's inputs $\bar z = [1, z]$ (the bias
# is column 0 of $\hat W = [b, W]$, as in the augmented notation) and
# $G = E[J^\top H_L J]$, $J = ∂\hat y/∂a$, over its outputs.
# [`fnn.kfac_factors`][fnn.kfac_factors]; $A$ against the forward cache:

# %%
K = fnn.kfac_factors(net, params, x, y, loss="l2")
_, caches = fnn.forward_pass(net, params, x)
for i, (factors, cache) in enumerate(zip(K, caches), start=1):
    z_bar = jnp.concatenate([jnp.ones((x.shape[0], 1)), cache.z_prev], axis=1)
    A_by_hand = z_bar.T @ z_bar / x.shape[0]
    print(
        f"layer {i}: A {factors['A'].shape}, G {factors['G'].shape}; "
        f"max |A − E[z̄ z̄ᵀ]| = {float(jnp.abs(factors['A'] - A_by_hand).max()):.1e}"
    )

# %% [markdown]
# For one example $G \otimes A$ *is* the layer's Gauss–Newton block (of $\hat W$, row by
# row); over a batch it is an approximation, since $E[H_a \otimes \bar z \bar z^\top] \neq
# E[H_a] \otimes E[\bar z \bar z^\top]$. Against the exact blocks of
# [`curvature.ggn_blocks`][fnn.curvature.ggn_blocks] (rows in `ravel_pytree(params[i])`
# order, `W` then `b`, reordered here to $\hat W$'s):


# %%
def kfac_errors(xs, ys):
    """‖G ⊗ A − GGN block‖ / ‖GGN block‖ for every layer."""
    factors = fnn.kfac_factors(net, params, xs, ys, loss="l2")
    blocks = fnn.curvature.ggn_blocks(net, params, xs, ys, loss="l2")
    errors = []
    for p, f, block in zip(params, factors, blocks):
        M, D = p["W"].shape
        # vec(Ŵ) row-major: [b_j, W_j0, …, W_j(D−1)] per row j; the block: W row-major, then b.
        order = jnp.array(
            [M * D + j if k == 0 else j * D + k - 1 for j in range(M) for k in range(D + 1)]
        )
        exact = block[jnp.ix_(order, order)]
        approx = jnp.kron(f["G"], f["A"])
        errors.append(float(jnp.linalg.norm(approx - exact) / jnp.linalg.norm(exact)))
    return errors


for i, (one, batch) in enumerate(zip(kfac_errors(x[:1], y[:1]), kfac_errors(x, y)), start=1):
    print(
        f"layer {i}: ‖G⊗A − GGN block‖ / ‖GGN block‖ = {one:.1e} (one example), "
        f"{batch:.2f} (a batch of {len(x)})"
    )

# %% [markdown]
# The output layer's block is exact for the batch too: with an identity output and L2,
# $H_a = 2I$ is the same for every example, and $E[H_a \otimes \bar z \bar z^\top]$
# factors.

# %% [markdown]
# ## S29 — the dense Hessian, four ways
#
# Like the Jacobian in [tutorial 4](04_forward_vs_reverse.html), one order up: the Hessian
# is the Jacobian of the gradient, and either derivative can be taken in either mode.
# [`fnn.hessian`][fnn.hessian] with `method` = `fwd_over_rev` (the default: $P$ HVPs),
# `rev_over_fwd`, `rev_over_rev`, `fwd_over_fwd`: the outer derivative is JAX's, the inner
# gradient fnn's own backprop (`*_over_rev`) or forward mode (`*_over_fwd`, one tangent per
# parameter). Rows and columns in `ravel_pytree(params)` order. All four agree with
# `jax.hessian`; their cost differs, as
# [`cost_model.hessian_macs`][fnn.cost_model.hessian_macs] counts:

# %%
print(f"P = {theta.size}")
print(f"{'mode':<14} {'max |H − jax.hessian|':>22} {'ms':>8} {'MACs':>12}")
for mode in fnn.curvature.HESSIAN_METHODS:
    run = jax.jit(lambda p, mode=mode: fnn.hessian(net, p, x, y, loss="l2", method=mode))
    H = jax.block_until_ready(run(params))
    start = time.perf_counter()
    for _ in range(2):
        jax.block_until_ready(run(params))
    ms = (time.perf_counter() - start) / 2 * 1e3
    macs = fnn.cost_model.hessian_macs(net, mode, batch=x.shape[0])
    print(f"{mode:<14} {float(jnp.abs(H - H_dense).max()):>22.1e} {ms:>8.1f} {macs:>12,}")

# %% [markdown]
# And the check of Bishop 5.4.4: central differences of the gradient, column by column,
# $H e_k \approx (∇L(θ + h e_k) - ∇L(θ - h e_k)) / 2h$.

# %%
h = 1e-5
grad_flat = jax.grad(lambda t: L(unravel(t)))
cols = jax.vmap(lambda e: (grad_flat(theta + h * e) - grad_flat(theta - h * e)) / (2 * h))(
    jnp.eye(theta.size)
)
H = fnn.hessian(net, params, x, y, loss="l2")
print("max |H − central differences of ∇L|:", float(jnp.abs(H - cols.T).max()))
