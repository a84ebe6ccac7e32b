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
# # 4. Forward vs reverse mode, and full Jacobians
#
# The Jacobian of a network is a product of matrices (S15–S17):
#
# $$
# J_{nn}(x) = J_{f^{out}}\, W^{(N)}\, J_{f^{(N-1)}}\, W^{(N-1)} \cdots J_{f^{(1)}}\, W^{(1)} .
# $$
#
# Backpropagation multiplies it out from the left: row vectors, one per output. Forward
# accumulation (S18) multiplies it out from the right: a *tangent* $\dot x$ pushed from the
# input to the output, one per input dimension. Same numbers, different cost — this
# tutorial computes both, checks them against `jax.jacfwd`/`jax.jacrev`, counts their cost
# and times them.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import fnn
from fnn import cost_model, forward_mode

# %% [markdown]
# ## A tangent pushed forward
#
# Forward accumulation runs beside the forward pass: with $\dot z^{(0)} = \dot x$,
# $\dot a^{(i)} = W^{(i)} \dot z^{(i-1)}$ and $\dot z^{(i)} = f'(a^{(i)}) \odot \dot a^{(i)}$.
# At the output, $\dot y = J_{nn}(x)\,\dot x$ — one column of the Jacobian when $\dot x$
# is a unit vector. [`forward_mode.jvp`][fnn.forward_mode.jvp]:

# %%
net = fnn.MLP((3, 5, 5, 2), ("tanh", "tanh", "identity"))
params = fnn.init(jax.random.key(0), net)
x = jnp.array([0.5, -1.0, 2.0])

e0 = jnp.array([1.0, 0.0, 0.0])
y, y_dot = forward_mode.jvp(net, params, x, x_dot=e0)
print("ẏ for ẋ = e₀:", y_dot)
print("jax.jvp:     ", jax.jvp(lambda x: fnn.apply(net, params, x), (x,), (e0,))[1])

J = jax.jacfwd(lambda x: fnn.apply(net, params, x))(x)
print("column 0 of J:", J[:, 0])

# %% [markdown]
# The tangent can also move the parameters: $\dot y = J_x \dot x + J_θ \dot θ$ is the
# directional derivative of the output along a change of the weights, the building block of
# `method="forward"` gradients (one tangent per parameter).

# %%
params_dot = jax.tree.map(jnp.zeros_like, params)
params_dot[1]["W"] = params_dot[1]["W"].at[0, 0].set(1.0)  # move one weight
_, y_dot = forward_mode.jvp(net, params, x, params_dot=params_dot)
by_jax = jax.jvp(lambda p: fnn.apply(net, p, x), (params,), (params_dot,))[1]
print("∂y/∂W²₀₀:", y_dot, "  jax.jvp:", by_jax)

# %% [markdown]
# ## The full Jacobian, both ways
#
# [`fnn.jacobian`][fnn.derivatives.jacobian] with `mode="forward"` pushes the identity
# matrix $I_D$ (all $D_{in}$ tangents at once,
# [`forward_mode.jacobian_forward`][fnn.forward_mode.jacobian_forward]); `mode="reverse"`
# pulls $I_M$ backwards (all $M_{out}$ rows at once,
# [`backprop.jacobian_reverse`][fnn.backprop.jacobian_reverse]); `"auto"`, the default,
# picks the cheaper one by the cost model; `"explicit"` multiplies the lecture's dense
# matrices, a diagonal $J_f$ included
# ([`backprop.jacobian_explicit`][fnn.backprop.jacobian_explicit]).

# %%
for mode in ["forward", "reverse", "auto", "explicit"]:
    J_mode = fnn.jacobian(net, params, x, method=mode)
    print(
        f"{mode:<8} shape {J_mode.shape},"
        f" max |J − jax.jacfwd| = {float(jnp.abs(J_mode - J).max()):.1e}"
    )
print(
    "jax.jacrev agrees:",
    bool(jnp.allclose(jax.jacrev(lambda x: fnn.apply(net, params, x))(x), J, atol=1e-6)),
)

# %% [markdown]
# ## What each costs: counting multiply-adds
#
# One tangent pass and one cotangent pass cost the same, about one forward pass:
# $\sum_i (n_i n_{i-1} + n_i)$ multiply-adds ([`cost_model.pass_macs`][fnn.cost_model.pass_macs]).
# The full Jacobian needs $D_{in}$ of the first kind or $M_{out}$ of the second, so forward
# mode wins for wide outputs and reverse mode for wide inputs. A gradient is the extreme
# case: $M_{out} = 1$ — which is why training uses backpropagation.

# %%
cases = {
    "784→256→256→10 (classifier)": fnn.MLP((784, 256, 256, 10), ("tanh", "tanh", "identity")),
    "10→256→256→784 (decoder)": fnn.MLP((10, 256, 256, 784), ("tanh", "tanh", "identity")),
    "100→64→64→1 (a loss)": fnn.MLP((100, 64, 64, 1), ("tanh", "tanh", "identity")),
}
print(f"{'network':<30} {'forward MACs':>14} {'reverse MACs':>14} {'ratio':>7}  auto picks")
for name, n in cases.items():
    fwd, rev = cost_model.jacobian_macs(n, "forward"), cost_model.jacobian_macs(n, "reverse")
    print(f"{name:<30} {fwd:>14,} {rev:>14,} {fwd / rev:>7.2f}  {cost_model.choose_method(n)}")
print(
    "break-even output width for 10→256→256→M:",
    round(cost_model.crossover((256, 256), 10, "output"), 3),
)

# %% [markdown]
# ## Measured
#
# The count is a model: it leaves out memory traffic and the kernels' speed at each shape.
# Timed here (jit-compiled, warmed up, the median of several calls) on networks
# $16 \to 256 \to 256 \to M$ as the output width $M$ grows. The machine building this
# page is small and shared, so the times are noisy; the trend is what matters.
# (`scripts/compare_modes.py` runs the careful version: `make demo`.)


# %%
def median_seconds(f, *args, repeats=9):
    jax.block_until_ready(f(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


widths = [1, 4, 16, 64, 256, 1024]
measured = {"forward": [], "reverse": []}
x16 = jax.random.normal(jax.random.key(1), (16,))
for M in widths:
    n = fnn.MLP((16, 256, 256, M), ("tanh", "tanh", "identity"))
    p = fnn.init(jax.random.key(2), n)
    for mode in measured:
        f = jax.jit(lambda p, x, mode=mode, n=n: fnn.jacobian(n, p, x, method=mode))
        measured[mode].append(median_seconds(f, p, x16))

print(f"{'M_out':>6} {'forward µs':>11} {'reverse µs':>11} {'rev ÷ fwd':>10}")
for M, tf, tr in zip(widths, measured["forward"], measured["reverse"]):
    print(f"{M:>6} {tf * 1e6:>11.1f} {tr * 1e6:>11.1f} {tr / tf:>10.2f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
for mode, marker in [("forward", "o-"), ("reverse", "s-")]:
    ax.loglog(widths, np.array(measured[mode]) * 1e6, marker, label=f"{mode} mode")
ax.axvline(16, color="gray", ls=":", label="M_out = D_in = 16")
ax.set_xlabel("output width M_out")
ax.set_ylabel("µs per full Jacobian")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Forward mode always pushes 16 tangents, so its time grows only with the last layer's
# width; reverse mode pulls one row per output, so its time grows with $M_{out}$. The cost
# model puts the break-even at $M_{out} = D_{in} = 16$; where the measured curves cross
# depends on the machine's kernels at these small shapes (on the 2-core CPU of the README's
# performance section, between 21 and 25 for $10 \to 256 \to 256 \to M$).
#
# Next: [tutorial 5](05_gradient_checking.html) — how to know that a hand-written
# derivative is right.
