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
# # 3. Backpropagation by hand
#
# One neuron with its cache (S14), then a small network worked through number by number —
# the calculation a student does on paper — and the same numbers three more ways: the
# lecture's literal product of dense Jacobian matrices (S15–S17), fnn's structured engine
# that never builds those matrices, and `jax.grad`. At the end the lecture's own PyTorch
# example, ported (S20).

# %%
import jax
import jax.numpy as jnp
import numpy as np

import fnn
from fnn import backprop, layer, local_jacobians, losses

np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## S14 — one neuron and its cache
#
# The forward pass keeps $(x, a, z)$. Given $∂L/∂z$ from above, the lecture's four lines:
#
# $$
# \frac{∂L}{∂a} = \frac{∂L}{∂z} f'(a), \qquad \frac{∂L}{∂b} = \frac{∂L}{∂a}, \qquad
# \frac{∂L}{∂w_i} = \frac{∂L}{∂a} x_i, \qquad \frac{∂L}{∂x_i} = \frac{∂L}{∂a} w_i .
# $$
#
# With $L = (z - y)^2$, $∂L/∂z = 2(z - y)$:

# %%
w = jnp.array([0.5, -0.3])
b = jnp.array(0.1)
x = jnp.array([1.0, 2.0])
y = jnp.array(1.0)

z, cache = backprop.neuron_forward(w, b, x, "sigmoid")
L1 = (z - y) ** 2
print(f"a = {float(cache.a):.4f}, z = σ(a) = {float(z):.4f}, L = (z − y)² = {float(L1):.4f}")
g = backprop.neuron_backward(w, cache, 2 * (z - y), "sigmoid")
print("∂L/∂a =", g.a, " ∂L/∂b =", g.b)
print("∂L/∂w =", g.w, " ∂L/∂x =", g.x)


def neuron_loss(w, b, x):
    return (jax.nn.sigmoid(w @ x + b) - y) ** 2


dw, db, dx = jax.grad(neuron_loss, argnums=(0, 1, 2))(w, b, x)
print("jax.grad: ∂L/∂w =", dw, " ∂L/∂b =", db, " ∂L/∂x =", dx)

# %% [markdown]
# ## A worked example, number by number
#
# A 2-2-1 network: two sigmoid hidden units, a linear output, the squared error
# $L = (\hat y - y)^2$, one example. Small round numbers, so that every line can be
# checked with a pocket calculator.

# %%
net = fnn.MLP(sizes=(2, 2, 1), activations=("sigmoid", "identity"))
params = [
    {"W": jnp.array([[0.1, 0.2], [-0.3, 0.4]]), "b": jnp.array([0.0, 0.1])},
    {"W": jnp.array([[0.5, -0.6]]), "b": jnp.array([0.2])},
]
x = jnp.array([1.0, 2.0])
y = jnp.array([1.0])

# %% [markdown]
# **Forward.** $a^{(1)} = W^{(1)} x + b^{(1)}$, $z^{(1)} = σ(a^{(1)})$,
# $\hat y = a^{(2)} = W^{(2)} z^{(1)} + b^{(2)}$.

# %%
W1, b1, W2, b2 = params[0]["W"], params[0]["b"], params[1]["W"], params[1]["b"]
a1 = W1 @ x + b1
z1 = jax.nn.sigmoid(a1)
a2 = W2 @ z1 + b2
y_hat = a2
L = jnp.sum((y_hat - y) ** 2)
print("a¹ = W¹x + b¹ =", np.asarray(a1))
print("     (0.1·1 + 0.2·2 + 0 = 0.5;  −0.3·1 + 0.4·2 + 0.1 = 0.6)")
print("z¹ = σ(a¹)    =", np.asarray(z1))
print("ŷ = W²z¹ + b² =", np.asarray(a2))
print("L = (ŷ − y)²  =", float(L))

# %% [markdown]
# **Backward.** From the loss back, each step one local derivative:
#
# * $∂L/∂\hat y = 2(\hat y - y)$; the output is linear, so $δ^{(2)} = ∂L/∂a^{(2)} = ∂L/∂\hat y$;
# * $∂L/∂W^{(2)} = δ^{(2)} \otimes z^{(1)}$, $∂L/∂b^{(2)} = δ^{(2)}$;
# * $∂L/∂z^{(1)} = δ^{(2)} W^{(2)}$ and $δ^{(1)} = ∂L/∂z^{(1)} \odot σ'(a^{(1)})$,
#   with $σ'(a) = σ(a)(1 - σ(a))$;
# * $∂L/∂W^{(1)} = δ^{(1)} \otimes x$, $∂L/∂b^{(1)} = δ^{(1)}$, $∂L/∂x = δ^{(1)} W^{(1)}$.

# %%
dL_dyhat = 2 * (y_hat - y)
delta2 = dL_dyhat * 1.0  # f_out = identity: f′ = 1
dL_dW2 = jnp.outer(delta2, z1)
dL_db2 = delta2
dL_dz1 = delta2 @ W2
delta1 = dL_dz1 * z1 * (1 - z1)  # ⊙ σ′(a¹)
dL_dW1 = jnp.outer(delta1, x)
dL_db1 = delta1
dL_dx = delta1 @ W1

rows = [
    ("∂L/∂ŷ = 2(ŷ − y)", dL_dyhat),
    ("δ² = ∂L/∂a²", delta2),
    ("∂L/∂W² = δ² ⊗ z¹", dL_dW2),
    ("∂L/∂b² = δ²", dL_db2),
    ("∂L/∂z¹ = δ² W²", dL_dz1),
    ("σ′(a¹) = z¹(1 − z¹)", z1 * (1 - z1)),
    ("δ¹ = ∂L/∂z¹ ⊙ σ′(a¹)", delta1),
    ("∂L/∂W¹ = δ¹ ⊗ x", dL_dW1),
    ("∂L/∂b¹ = δ¹", dL_db1),
    ("∂L/∂x = δ¹ W¹", dL_dx),
]
for name, value in rows:
    print(f"{name:<24} {np.asarray(value).ravel()}")

# %% [markdown]
# The same calculation three more ways. `fnn.value_and_grad` returns
# `{"params": …, "x": …}` in the shape of the parameters and of `x`:

# %%
hand = {"params": [{"W": dL_dW1, "b": dL_db1}, {"W": dL_dW2, "b": dL_db2}], "x": dL_dx}


def network_loss(params, x):
    return jnp.sum((fnn.apply(net, params, x) - y) ** 2)


by_jax = dict(zip(["params", "x"], jax.grad(network_loss, argnums=(0, 1))(params, x)))
print(f"{'method':<10} {'loss':>8}  max |grad − hand|")


def max_diff(u, v):
    return max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)))


for method in ["explicit", "reverse", "forward"]:
    value, grads = fnn.value_and_grad(net, params, x, y, loss="l2", method=method)
    print(f"{method:<10} {float(value):>8.5f}  {max_diff(grads, hand):.1e}")
print(f"{'jax.grad':<10} {float(network_loss(params, x)):>8.5f}  {max_diff(by_jax, hand):.1e}")

# %% [markdown]
# **What the numbers mean.** A derivative is a slope: $∂L/∂W^{(1)}_{11}$ says how fast the
# loss changes when that one weight moves and everything else stays. Moving $W^{(1)}_{11}$
# along a line and recomputing the loss shows the curve; the backward pass's number is the
# slope of its tangent at the current weight — and the slope of every other weight's curve,
# all from one pass.

# %%
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
for ax, (name, i, j) in zip(axes, [("W¹₁₁", 0, 0), ("W²₁₂", 1, 0)]):
    col = 0 if name == "W¹₁₁" else 1
    w0 = float(params[i]["W"][j, col])
    ts = np.linspace(w0 - 2, w0 + 2, 81)
    curve = [
        float(network_loss([dict(p, W=p["W"].at[j, col].set(t)) if k == i else p
                            for k, p in enumerate(params)], x))
        for t in ts
    ]  # fmt: skip
    slope = float(hand["params"][i]["W"][j, col])
    L0 = float(network_loss(params, x))
    ax.plot(ts, curve, label="L as the weight moves")
    ax.plot(ts, L0 + slope * (ts - w0), "--", label=f"tangent, slope ∂L/∂{name} = {slope:.3f}")
    ax.plot([w0], [L0], "ko")
    ax.set_xlabel(name)
    ax.set_ylim(0, max(curve) * 1.05)
    ax.legend(fontsize=7, loc="upper center")
axes[0].set_ylabel("L")
fig.suptitle("the backward pass gives the slope of the loss along every weight at once")
plt.tight_layout()
plt.show()

# %%
# The whole pass on one picture (fnn.backprop_trace, drawn by Trace.plot): a, z and δ on the
# units, ∂L/∂W on the edges (red > 0, blue < 0, width ∝ |∂L/∂W|) — the numbers printed above.
fig = fnn.backprop_trace(net, params, x, y, loss="l2").plot()

# %% [markdown]
# ## S15–S17 — the explicit chain: a product of Jacobians
#
# Written as matrices, the derivative of the loss with respect to the input is a product of
# the building blocks' Jacobians ([tutorial 2](02_activations_losses.html)):
#
# $$
# \frac{∂L}{∂x} = J_L(\hat y)\; J_{f_{out}}(a^{(2)})\; W^{(2)}\; J_{σ}(a^{(1)})\; W^{(1)} .
# $$
#
# Evaluated from the left, every partial product is a row vector, and the running product
# at layer $i$ is $δ^{(i)}$: the same vector gives $∂L/∂b^{(i)} = δ^{(i)} \cdot I$ and
# $∂L/∂W^{(i)} = δ^{(i)} \cdot (I \otimes z^{(i-1)})$. With the dense matrices of
# [`fnn.local_jacobians`][fnn.local_jacobians]:

# %%
J_L = local_jacobians.loss("l2", y_hat, y)  # (1,)   row vector
J_fout = local_jacobians.activation("identity", a2)  # (1, 1)
J_f1 = local_jacobians.activation("sigmoid", a1)  # (2, 2) = diag(σ′(a¹))
print("J_L =", J_L, "\nJ_σ(a¹) =\n", J_f1)

d2 = J_L @ J_fout  # δ²
d1 = d2 @ W2 @ J_f1  # δ¹ = δ² W² J_σ(a¹)
print("δ² =", d2, " δ¹ =", d1, " ∂L/∂x = δ¹ W¹ =", d1 @ W1)
print("∂L/∂W¹ = δ¹ · (I ⊗ x):\n", local_jacobians.row_times(d1, local_jacobians.affine_W(W1, x)))
print("∂L/∂b¹ = δ¹ · I:", d1 @ local_jacobians.affine_b(b1))

# %% [markdown]
# `method="explicit"` ([`backprop.explicit`][fnn.backprop.explicit]) is exactly this loop,
# one layer of it [`layer.vjp_explicit`][fnn.layer.vjp_explicit], `jax.vmap`-ed over a batch.
# It builds a dense $M \times M$ matrix for every elementwise activation of every example,
# which is why it is only for teaching:
# [`backprop.explicit_bytes`][fnn.backprop.explicit_bytes] counts its memory, and a call
# over [`EXPLICIT_MAX_BYTES`][fnn.backprop.EXPLICIT_MAX_BYTES] (256 MiB) is refused.

# %%
big = fnn.MLP((784, 512, 512, 10), ("relu", "relu", "identity"))
for batch in [1, 64, 256]:
    print(
        f"batch {batch:>4}: explicit engine needs "
        f"{backprop.explicit_bytes(big, batch, 'float32') / 2**20:8.1f} MiB"
    )

# %% [markdown]
# ## The structured engine
#
# `method="reverse"` ([`backprop.reverse`][fnn.backprop.reverse]) runs the same recursion
# with the structure used: $δ \cdot J_f = δ \odot f'(a)$ instead of a diagonal matrix, and
# the batch kept inside the matrix products — $Δ$ of shape $(B, M)$,
# $∂L/∂W = Δ^\top Z$ for the batch mean. One layer of it is
# [`layer.vjp_batch`][fnn.layer.vjp_batch]; here it is, applied by hand
# to the worked example (a batch of one, so $G = ∂L/∂\hat Y / B$ with $B = 1$):

# %%
Y_hat, caches = fnn.forward_pass(net, params, x[None, :])
G = jax.vmap(losses.get("l2").jacobian)(Y_hat, y[None, :])  # (B, M_out)
for i in reversed(range(net.num_layers)):
    grads_i, G = layer.vjp_batch(params[i], net.activations[i], caches[i], G)
    dW, db = np.asarray(grads_i["W"]).ravel(), np.asarray(grads_i["b"])
    print(f"layer {i + 1}: ∂L/∂W = {dW}, ∂L/∂b = {db}")
print("∂L/∂x =", np.asarray(G[0]))

# %% [markdown]
# The three engines agree on random networks of every activation, too (fnn's tests do
# this for the whole zoo, in float64, against `jax.grad` and central differences):

# %%
for acts in [("tanh", "relu", "identity"), ("gelu", "softplus", "softmax")]:
    net3 = fnn.MLP((4, 5, 5, 3), acts)
    p3 = fnn.init(jax.random.key(1), net3)
    X = jax.random.normal(jax.random.key(2), (8, 4))
    if acts[-1] == "softmax":
        Y, loss = jnp.arange(8) % 3, "cross_entropy"
    else:
        Y, loss = jax.random.normal(jax.random.key(3), (8, 3)), "l2"
    results = {
        m: fnn.value_and_grad(net3, p3, X, Y, loss=loss, method=m)
        for m in ["explicit", "reverse", "forward"]
    }
    ref = results["reverse"][1]
    diffs = ", ".join(
        f"{m} {max_diff(g, ref):.0e}" for m, (_, g) in results.items() if g is not ref
    )
    print(f"{' → '.join(acts):26} {loss:14} max |grad − reverse|  {diffs}")

# %% [markdown]
# ## S20 — the lecture's PyTorch example, ported
#
# The lecture ends with PyTorch: $x \in \mathbb{R}^{10}$, three 10×10 layers with sigmoid,
# sigmoid, identity, the squared error, and `Loss.backward()`. Here the gradients come from
# the hand-written backprop and are compared with `jax.grad` of the lecture's loop, line by
# line (`scripts/lecture_example.py` prints every entry).

# %%
net = fnn.MLP((10, 10, 10, 10), ("sigmoid", "sigmoid", "identity"))
k_params, k_b, k_x, k_y = jax.random.split(jax.random.key(0), 4)
params = fnn.init(k_params, net, scheme="normal")  # W[k] = torch.randn(10, 10)
for p_k, k in zip(params, jax.random.split(k_b, 3)):
    p_k["b"] = jax.random.normal(k, (10,))  # b[k] = torch.randn(10, 1)
x = jax.random.normal(k_x, (10,))
y = jax.random.normal(k_y, (10,))

F = (jax.nn.sigmoid, jax.nn.sigmoid, lambda a: a)


def lecture_loss(W, b, x):
    z = x
    for k in range(3):
        z = F[k](W[k] @ z + b[k])
    return jnp.sum((z - y) ** 2)


W = [p["W"] for p in params]
b = [p["b"] for p in params]
gW, gb, gx = jax.grad(lecture_loss, argnums=(0, 1, 2))(W, b, x)
loss, grads = fnn.value_and_grad(net, params, x, y, loss="l2", method="reverse")
print(f"Loss = {float(loss):.4f}")
print("x.grad =", np.asarray(grads["x"]).round(2))
print(f"x.grad: max diff to jax.grad {float(jnp.abs(grads['x'] - gx).max()):.1e}")
for k in range(3):
    print(
        f"W[{k}].grad: max diff {float(jnp.abs(grads['params'][k]['W'] - gW[k]).max()):.1e},"
        f"  b[{k}].grad: max diff {float(jnp.abs(grads['params'][k]['b'] - gb[k]).max()):.1e}"
    )

# %% [markdown]
# Next: [tutorial 4](04_forward_vs_reverse.html) evaluates the same chain from the other
# end — forward mode — and asks which end is cheaper.
