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
# # 5. Gradient checking done right
#
# The lecture's naive way to a gradient is the one every hand-written derivative is checked
# against (S11):
#
# $$
# \frac{∂L}{∂θ_i} = \frac{L(θ + h e_i) - L(θ - h e_i)}{2h} + O(h^2).
# $$
#
# It costs two loss evaluations per parameter and its error depends on $h$ in a way that
# bites. This tutorial picks $h$, compares float32 with float64, deals with kinks, and
# shows what a passing check proves and what it does not (S11, S19). fnn's tests run every
# such check in float64, which this notebook switches on first.

# %%
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fnn  # noqa: E402
from fnn import gradcheck, numerical  # noqa: E402

# %% [markdown]
# ## The check, and its cost
#
# [`numerical.central_difference`][fnn.numerical.central_difference] differentiates any
# scalar function of any pytree, all $2P$ evaluations batched by `jax.vmap`.
# [`gradcheck.check_network`][fnn.gradcheck.check_network] compares a network's
# `{"params", "x"}` gradient with it entry by entry, with the relative error
# $|a_i - b_i| / \max(|a_i| + |b_i|, \mathrm{tiny})$, and names the worst entry.

# %%
net = fnn.MLP((4, 8, 8, 3), ("tanh", "sigmoid", "identity"))
params = fnn.init(jax.random.key(0), net)  # float64: x64 is on
x = jax.random.normal(jax.random.key(1), (16, 4))
y = jax.random.normal(jax.random.key(2), (16, 3))

loss, grads = fnn.value_and_grad(net, params, x, y, loss="l2", method="reverse")
report = gradcheck.check_network(net, params, x, y, grads, loss="l2")
print(report)


# %%
def f(p):
    return gradcheck.network_loss(net, p, x, y, loss="l2")


print(numerical.compare_cost(f, params, jax.grad(f)))

# %% [markdown]
# Two evaluations for every one of the $P$ parameters against one backward pass: for any
# network worth training this is hopeless as a way to *compute* gradients, and perfect as a
# way to *check* them on a small one.
#
# ## Choosing ε: truncation against round-off
#
# The $O(h^2)$ truncation error shrinks with $h$; the round-off error
# $\approx ε_{mach} |L| / h$ grows as $h$ shrinks. In log-log axes the total is a V, with its
# bottom near $h = ε_{mach}^{1/3}$ ([`numerical.default_eps`][fnn.numerical.default_eps]):
# about $6 \cdot 10^{-6}$ in float64 and $5 \cdot 10^{-3}$ in float32. The reference is the
# float64 hand-written gradient.

# %%
small = fnn.MLP((3, 5, 1), ("tanh", "identity"))
p64 = fnn.init(jax.random.key(3), small)
x64, y64 = jnp.array([0.3, -0.8, 1.1]), jnp.array([0.5])
_, g64 = fnn.value_and_grad(small, p64, x64, y64)
p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p64)
x32, y32 = x64.astype(jnp.float32), y64.astype(jnp.float32)

sweeps = {
    "float64": numerical.error_vs_eps(
        lambda p: gradcheck.network_loss(small, p, x64, y64), p64, g64["params"]
    ),
    "float32": numerical.error_vs_eps(
        lambda p: gradcheck.network_loss(small, p, x32, y32), p32, g64["params"]
    ),
}
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for (name, sweep), color in zip(sweeps.items(), ["tab:blue", "tab:orange"]):
    ax.loglog(sweep.eps, sweep.median_error, "o-", ms=3, color=color, label=f"{name} (median)")
    ax.axvline(numerical.default_eps(jnp.dtype(name)), color=color, ls=":")
    best = int(np.argmin(sweep.median_error))
    print(
        f"{name}: best ε {sweep.eps[best]:.1e} (error {sweep.median_error[best]:.1e}), "
        f"default ε_mach^(1/3) = {numerical.default_eps(jnp.dtype(name)):.1e}"
    )
ax.set_xlabel("ε")
ax.set_ylabel("relative error of the central difference")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The float32 V bottoms out around $10^{-5}$ relative error; the float64 one near
# $10^{-10}$. Central differences in float32 can only tell errors apart from noise down to
# about 1 %. That is why fnn's oracle computes them in float64 whatever the gradient's dtype
# (the point is upcast exactly): a float32 gradient is judged against a reference some
# $10^4$ times more accurate than itself, to its own precision
# ([`gradcheck.THRESHOLDS`][fnn.gradcheck.THRESHOLDS]: $10^{-3}$ for float32, $10^{-6}$ for
# float64).

# %%
_, g32 = fnn.value_and_grad(small, p32, x32, y32)
for report in (
    gradcheck.check_network(small, p32, x32, y32, g32),
    gradcheck.check_network(small, p64, x64, y64, g64),
):
    print("\n".join(str(report).splitlines()[:2]))
print(
    "smallest derivative resolved (|L| = 1): float32",
    f"{numerical.resolution(jnp.float32, 1.0):.0e},",
    f"float64 {numerical.resolution(jnp.float64, 1.0):.0e}",
)

# %% [markdown]
# ## A check that fails, and says where
#
# Two classic bugs: forgetting the $1/B$ of the batch mean, and a transposed weight
# gradient ($z \otimes δ$ instead of $δ \otimes z$; the shapes even match for a square
# layer). The report names the leaf and the entry.

# %%
forgot_mean = {"params": jax.tree.map(lambda g: g * x.shape[0], grads["params"]), "x": grads["x"]}
print(gradcheck.check_network(net, params, x, y, forgot_mean))

# %%
transposed = jax.tree.map(lambda g: g, grads)
transposed["params"][1]["W"] = grads["params"][1]["W"].T  # the 8×8 hidden layer
report = gradcheck.check_network(net, params, x, y, transposed)
print("\n".join(str(report).splitlines()[:2]))

# %% [markdown]
# ## Kinks
#
# ReLU has no derivative at 0, hard tanh none at ±1, L1 none where a residual is 0. If
# $θ ± h$ moves a pre-activation across a kink, the central difference averages the two
# slopes and agrees with neither: a false failure. Here one ReLU unit is put on its kink
# for one example (its bias cancels its input exactly):

# %%
relu_net = fnn.MLP((2, 3, 1), ("relu", "identity"))
rp = fnn.init(jax.random.key(4), relu_net)
xr = jnp.array([[0.7, -0.2], [0.1, 0.9]])
yr = jnp.array([[0.3], [-0.4]])
rp[0]["b"] = rp[0]["b"].at[0].set(-(rp[0]["W"][0] @ xr[0]))  # a₀ = 0 for example 0
_, rg = fnn.value_and_grad(relu_net, rp, xr, yr)

kinks = gradcheck.kink_crossings(relu_net, rp, xr, yr)
print("entries whose θ ± h crosses a kink:", int(sum(jnp.sum(k) for k in jax.tree.leaves(kinks))))
print(gradcheck.check_network(relu_net, rp, xr, yr, rg))

# %% [markdown]
# `check_network` finds those entries itself and reports them instead of failing on them.
# The same comparison without that knowledge fails:


# %%
def relu_loss(tree):
    return gradcheck.network_loss(relu_net, tree["params"], tree["x"], yr)


blind = gradcheck.check_gradient(relu_loss, {"params": rp, "x": xr}, rg)
print("\n".join(str(blind).splitlines()[:2]))

# %% [markdown]
# ## What a passing check does not prove
#
# **1. That the function is the one you meant.** A check compares the gradient with the
# function it is given. Differentiate the wrong loss consistently and the check passes:
# here the L1 loss and its gradient, where L2 was meant.

# %%
_, g_l1 = fnn.value_and_grad(net, params, x, y, loss="l1")
print(
    "L1 gradient checked against the L1 loss:",
    gradcheck.check_network(net, params, x, y, g_l1, loss="l1").passed,
)
print(
    "…against the L2 loss that was meant:   ",
    gradcheck.check_network(net, params, x, y, g_l1, loss="l2").passed,
)

# %% [markdown]
# **2. Code paths the check point never visits.** A derivative that is wrong only on one
# branch (here a leaky ReLU whose left slope is written as 0.1 instead of 0.01) passes at a
# point where every pre-activation is positive, and fails at one where some are negative.

# %%
W = jnp.array([[0.5, 0.2], [0.3, 0.4]])


def leaky_loss(W, x):
    a = W @ x
    return jnp.sum(jnp.where(a > 0, a, 0.01 * a) ** 2)


def buggy_grad(W, x):
    a = W @ x
    z = jnp.where(a > 0, a, 0.01 * a)
    slope = jnp.where(a > 0, 1.0, 0.1)  # bug: should be 0.01
    return jnp.outer(2 * z * slope, x)


for x_point in [jnp.array([1.0, 2.0]), jnp.array([-1.0, -2.0])]:
    c = gradcheck.check_gradient(lambda W, x=x_point: leaky_loss(W, x), W, buggy_grad(W, x_point))
    print(f"x = {x_point}: pre-activations {W @ x_point}, check {'PASS' if c.passed else 'FAIL'}")

# %% [markdown]
# **3. The value at a kink.** ReLU′(0) = 0 is a convention; central differences at exactly
# $a = 0$ give $1/2$, the average of the two slopes. No finite difference can confirm or
# refute a convention — fnn states them in the docstrings and tests them as such.

# %%
relu = fnn.activations.get("relu")
h = 1e-6
print(
    "hand ReLU′(0) =",
    relu.derivative(jnp.array(0.0)),
    "  central difference =",
    (relu.fn(jnp.array(h)) - relu.fn(jnp.array(-h))) / (2 * h),
)

# %% [markdown]
# **4. Errors smaller than the resolution.** Even in float64, central differences cannot
# tell an entry from 0 below about $u = 10\,ε_{mach}^{2/3}\max(1, |L|) \approx 4 \cdot
# 10^{-10}\max(1, |L|)$. Such an entry is reported UNRESOLVED only when that blind spot
# could matter next to the gradient's own scale: when $u$ exceeds $10^{-5}$ times the
# largest entry of the gradient ([`gradcheck.FLOOR`][fnn.gradcheck.FLOOR]) — and only after
# a second look: the oracle takes the quotients at $2h, 4h, \dots$ up to 1 % of
# $\max(1, |θ_i|)$ as well, where the round-off shrinks as $u\,h/H$, and judges each entry
# by the sharpest candidate: the first look with its own measured truncation, or
# Richardson's extrapolation $(4D(H) - D(2H))/3$ of an agreeing pair of steps (one-sided
# where a step crosses a kink on one side; [`fnn.extrapolation`][fnn.extrapolation]). A dead ReLU unit, whose hand gradient is
# exactly 0 and whose central difference is rounding noise of $10^{-11}$, therefore passes:

# %%
dead_net = fnn.MLP((6, 8, 8, 4), ("relu", "relu", "identity"))
rng = np.random.default_rng(0)
dp = [{k: jnp.asarray(rng.normal(0, 0.6, s)) for k, s in shapes.items()}
      for shapes in dead_net.layer_shapes()]  # fmt: skip
dx, dy = jnp.asarray(rng.normal(size=(3, 6))), jnp.asarray(rng.integers(0, 4, 3))
_, dg = fnn.value_and_grad(dead_net, dp, dx, dy, loss="softmax_cross_entropy")
zeros = sum(int(jnp.sum(g == 0)) for g in jax.tree.leaves(dg))
print(f"{zeros} entries of the hand gradient are exactly 0 (dead units)")
print(gradcheck.check_network(dead_net, dp, dx, dy, dg, loss="softmax_cross_entropy"))

# %% [markdown]
# An error smaller than $10^{-5}$ of the gradient's largest entry can pass; every error
# the power experiment plants (×2, ×0, −1 on entries of at least $10^{-4}$ of the largest,
# ×1.01 on the largest) fails (`scripts/gradcheck_power.py`). A NaN or inf on either side
# always fails, naming the first such entry.
#
# ## The cheap check: random directions
#
# When $2P$ evaluations are too many,
# [`gradcheck.check_directional`][fnn.gradcheck.check_directional] compares
# $\langle ∇L, v \rangle$ with $(L(θ + hv) - L(θ - hv))/2h$ along $k$ random unit
# directions: $2k$ evaluations. It catches the bugs above, but cannot say which entry is
# wrong, and an error in a few entries is diluted by the others.

# %%
tree = {"params": params, "x": x}


def tree_loss(t):
    return gradcheck.network_loss(net, t["params"], t["x"], y)


for name, g in [("correct", grads), ("forgot 1/B", forgot_mean), ("transposed W²", transposed)]:
    report = gradcheck.check_directional(tree_loss, tree, g, key=jax.random.key(5), k=8)
    print(f"{name:<14}", report.verdict, str(report).splitlines()[1].strip())

# %% [markdown]
# ## Checking your own JAX code
#
# The same oracle checks any JAX function, not only fnn's networks — a `jax.custom_vjp`
# rule, a hand-written layer, a loss — from your own pytest suite
# ([`fnn.testing`](../api/testing.html)). Here a log-sum-exp whose backward pass forgot to
# normalise by $\sum_j e^{x_j}$:

# %%
from fnn import testing  # noqa: E402


@jax.custom_vjp
def logsumexp(x):
    return jnp.log(jnp.sum(jnp.exp(x)))


def lse_fwd(x):
    return logsumexp(x), x


def lse_bwd(x, g):
    return (g * jnp.exp(x),)  # bug: should be g * exp(x) / Σ exp(x)


logsumexp.defvjp(lse_fwd, lse_bwd)
try:
    testing.assert_vjp(logsumexp, jnp.array([0.5, -1.0, 2.0]))
except AssertionError as error:
    print(error)
