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
# # 3b. Looking inside backprop
#
# [Tutorial 3](03_backprop_by_hand.html) worked a small network through by hand. fnn keeps
# every one of those numbers for you (S23):
# [`fnn.backprop_trace`][fnn.traces.backprop_trace] runs one forward and one backward pass
# and returns, per layer $i$, $z^{(i-1)}$, $a^{(i)}$, $z^{(i)}$,
# $∂L/∂z^{(i)}$, $δ^{(i)} = ∂L/∂a^{(i)}$, $∂L/∂W^{(i)}$ and $∂L/∂b^{(i)}$ — per example, each
# the derivative of that example's own loss $L_b$. Printed, it is the table a student
# checks a hand calculation against.

# %%
import jax
import jax.numpy as jnp
import numpy as np

import fnn

np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## The worked example of tutorial 3, traced
#
# The same 2-2-1 network (sigmoid hidden units, linear output, squared error) and the same
# numbers:

# %%
net = fnn.MLP(sizes=(2, 2, 1), activations=("sigmoid", "identity"))
params = [
    {"W": jnp.array([[0.1, 0.2], [-0.3, 0.4]]), "b": jnp.array([0.0, 0.1])},
    {"W": jnp.array([[0.5, -0.6]]), "b": jnp.array([0.2])},
]
x = jnp.array([1.0, 2.0])
y = jnp.array([1.0])

t = fnn.backprop_trace(net, params, x, y, loss="l2")
print(t)

# %% [markdown]
# Each field against the hand calculation (the same lines as in tutorial 3):

# %%
W1, b1, W2, b2 = params[0]["W"], params[0]["b"], params[1]["W"], params[1]["b"]
a1 = W1 @ x + b1
z1 = jax.nn.sigmoid(a1)
y_hat = W2 @ z1 + b2
delta2 = 2 * (y_hat - y)
delta1 = (delta2 @ W2) * z1 * (1 - z1)
hand = [
    {
        "z_prev": x,
        "a": a1,
        "z": z1,
        "dL_dz": delta2 @ W2,
        "dL_da": delta1,
        "dL_dW": jnp.outer(delta1, x),
        "dL_db": delta1,
    },
    {
        "z_prev": z1,
        "a": y_hat,
        "z": y_hat,
        "dL_dz": delta2,
        "dL_da": delta2,
        "dL_dW": jnp.outer(delta2, z1),
        "dL_db": delta2,
    },
]
print(f"loss: traced {float(t.loss):.6f}, by hand {float(jnp.sum((y_hat - y) ** 2)):.6f}")
for i, (layer, expected) in enumerate(zip(t.layers, hand), start=1):
    worst = max(float(jnp.abs(getattr(layer, k) - v).max()) for k, v in expected.items())
    print(f"layer {i}: largest difference from the hand calculation over all 7 fields {worst:.1e}")

# %% [markdown]
# ## A picture of the pass
#
# [`Trace.plot`][fnn.traces.Trace.plot] draws the same numbers on the network, the layered
# twin of micrograd's `draw_dot`: each unit carries its $a$, $z$ and $δ$ (which is also
# $∂L/∂b$), each edge $d \to m$ its $∂L/∂W_{md} = δ_m z_d$, wide and dark where
# $|∂L/∂W|$ is large, red where it is positive and blue where it is negative; the inputs
# carry $x$ and $∂L/∂x$. A trace at the end of a notebook cell shows this picture as SVG
# ([`fnn.draw`][fnn.draw]); a batch is drawn one example at a time (`example=b`), and a
# layer wider than `max_units` (10) is refused: its table is the readable view.

# %%
fig = t.plot()

# %% [markdown]
# ## A batch: every example's own derivatives
#
# For a batch each field gains a leading axis $B$, and row $b$ is the derivative of
# example $b$'s own loss $L_b$ — not of the batch mean. Two facts tie it to the rest of fnn:
# $∂L_b/∂W^{(i)} = δ_b^{(i)} \otimes z_b^{(i-1)}$ row by row, and the mean over the batch is
# the gradient that [`fnn.value_and_grad`][fnn.derivatives.value_and_grad] returns.

# %%
X = jnp.array([[1.0, 2.0], [0.0, -1.0], [0.5, 0.5]])
Y = jnp.array([[1.0], [0.0], [-1.0]])
tb = fnn.backprop_trace(net, params, X, Y, loss="l2")
print("δ¹ per example:\n", tb.layers[0].dL_da)

outer = jnp.einsum("bi,bj->bij", tb.layers[0].dL_da, tb.layers[0].z_prev)
print("∂L_b/∂W¹ = δ_b ⊗ z_b for every b:", bool(jnp.allclose(tb.layers[0].dL_dW, outer)))

loss, grads = fnn.value_and_grad(net, params, X, Y, loss="l2")
for i in range(net.num_layers):
    print(
        f"layer {i + 1}: mean_b ∂L_b/∂W equals value_and_grad's:",
        bool(jnp.allclose(tb.layers[i].dL_dW.mean(axis=0), grads["params"][i]["W"], atol=1e-6)),
        "  batch loss:",
        bool(jnp.allclose(tb.loss, loss)),
    )

# %% [markdown]
# ## Where did the NaN come from?
#
# JAX propagates NaN silently: a single bad input entry makes the loss and every gradient
# NaN. [`Trace.first_nonfinite`][fnn.traces.Trace.first_nonfinite] walks the trace in
# the order the pass computed it — forward from layer 1, the loss, backward from layer $N$,
# then $∂L/∂x$ — and names the first layer, field and entry that was not finite:

# %%
X_bad = X.at[1, 0].set(jnp.nan)
loss_bad, _ = fnn.value_and_grad(net, params, X_bad, Y, loss="l2")
print("loss:", float(loss_bad))
print("first non-finite:", fnn.backprop_trace(net, params, X_bad, Y, loss="l2").first_nonfinite())
print("a clean trace:", tb.first_nonfinite())

# %% [markdown]
# A weight can be the culprit too: a NaN in $W^{(2)}$ leaves the first layer's forward pass
# finite and shows up first in $a^{(2)}$.

# %%
params_bad = [params[0], {**params[1], "W": params[1]["W"].at[0, 1].set(jnp.nan)}]
print("first non-finite:", fnn.backprop_trace(net, params_bad, X, Y, loss="l2").first_nonfinite())

# %% [markdown]
# `scripts/worked_example.py` goes the other way: it reproduces every number of a
# published hand calculation (Mazur's 2-2-2 sigmoid network) from `fnn.backprop_trace`. The
# per-example rows are what per-example gradients, their norms and DP-SGD's clipping are
# made of ([tutorial 6](06_training_per_example.html)).
