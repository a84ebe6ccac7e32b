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
# # 6. Training with optax, per-example gradients and DP-SGD
#
# fnn's hand-written gradient drives any optax optimizer (S21). The same backward pass
# holds more than the batch gradient: every example's own gradient
# $∂L_b/∂W = δ_b z_b^\top$, their norms without forming them, and the per-example clipped
# mean of DP-SGD (S24); their statistics over the batch (S25).

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits

import fnn
from fnn import training

# %% [markdown]
# ## S21 — the digits, three optimizers
#
# scikit-learn ships the 8×8 handwritten digits inside its wheel (1797 images, no
# download). A 64-64-10 tanh network with a linear output and the fused softmax
# cross-entropy, trained by [`training.fit`][fnn.training.fit]: shuffled mini-batches
# driven by an explicit key, each step fnn's own gradient followed by the optimizer's
# update.

# %%
digits = load_digits()
X = jnp.asarray(digits.data / 16.0, jnp.float32)
labels = jnp.asarray(digits.target)
perm = np.random.default_rng(0).permutation(len(X))
train, test = perm[:1400], perm[1400:]

net = fnn.MLP((64, 64, 10), ("tanh", "identity"))
params0 = fnn.init(jax.random.key(0), net)
optimizers = {
    "SGD": optax.sgd(0.1),
    "momentum": optax.sgd(0.05, momentum=0.9),
    "Adam": optax.adam(3e-3),
}
fig, ax = plt.subplots(figsize=(6.5, 3.6))
trained = {}
for name, optimizer in optimizers.items():
    params, history = training.fit(
        net,
        params0,
        X[train],
        labels[train],
        optimizer,
        key=jax.random.key(1),
        loss="softmax_cross_entropy",
        epochs=20,
        batch_size=32,
        progress=False,
    )
    accuracy = float(jnp.mean(jnp.argmax(fnn.apply(net, params, X[test]), axis=1) == labels[test]))
    trained[name] = params
    ax.semilogy(history.epoch_loss, label=f"{name}: test accuracy {accuracy:.1%}")
ax.set_xlabel("epoch")
ax.set_ylabel("training loss")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## S24 — per-example gradients from one backward pass
#
# The batch gradient of the mean loss is $\frac1B \sum_b δ_b z_b^\top$; the backward pass
# already has every $δ_b$ and $z_b$. [`fnn.per_example_grads`][fnn.per_example_grads]
# returns them un-averaged: a leading axis $B$ on every leaf. The witness is
# `jax.vmap(jax.grad(…))`, which differentiates each example separately.

# %%
params = trained["Adam"]
xb, yb = X[train[:32]], labels[train[:32]]
losses_b, grads_b = fnn.per_example_grads(net, params, xb, yb, loss="softmax_cross_entropy")
print("losses_b:", losses_b.shape, "  grads_b[0]['W']:", grads_b[0]["W"].shape)


def one_loss(p, x, y):
    return fnn.losses.get("softmax_cross_entropy").fn(fnn.apply(net, p, x), y)


by_vmap = jax.vmap(jax.grad(one_loss), in_axes=(None, 0, 0))(params, xb, yb)
print(
    "max |per_example_grads − vmap(grad)|:",
    max(
        float(jnp.abs(a - b).max())
        for a, b in zip(jax.tree.leaves(grads_b), jax.tree.leaves(by_vmap))
    ),
)
_, grads = fnn.value_and_grad(net, params, xb, yb, loss="softmax_cross_entropy")
print(
    "their mean is the batch gradient:",
    all(
        bool(jnp.allclose(a.mean(axis=0), b, atol=1e-6))
        for a, b in zip(jax.tree.leaves(grads_b), jax.tree.leaves(grads["params"]))
    ),
)

# %% [markdown]
# ### Their norms, without forming them
#
# For one layer, $\lVert δ_b z_b^\top \rVert_F^2 = \lVert δ_b \rVert^2 \lVert z_b \rVert^2$ and
# the bias adds $\lVert δ_b \rVert^2$: the norm of every example's gradient costs a few
# vector norms, never a $B \times M \times D$ tensor.
# [`fnn.per_example_grad_norms`][fnn.per_example_grad_norms]:

# %%
norms = fnn.per_example_grad_norms(net, params, xb, yb, loss="softmax_cross_entropy")
formed = jnp.sqrt(
    sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads_b))
)
print("norms:", np.round(np.asarray(norms[:6]), 4), "…")
print("max |norms − ‖grads_b‖|:", float(jnp.abs(norms - formed).max()))

# %% [markdown]
# ### DP-SGD's clipped mean
#
# Differentially private SGD bounds each example's influence: every per-example gradient is
# scaled to norm at most $C$, then averaged (and noise is added). The clipped mean
# $\frac1B \sum_b ∇L_b \min(1, C / \lVert ∇L_b \rVert)$ comes out of the same pass:
# [`fnn.clipped_grad`][fnn.clipped_grad].

# %%
C = 1.0
loss, clipped = fnn.clipped_grad(net, params, xb, yb, max_norm=C, loss="softmax_cross_entropy")
scale = jnp.minimum(1.0, C / formed)
by_hand = jax.tree.map(
    lambda g: jnp.mean(g * scale.reshape(-1, *([1] * (g.ndim - 1))), axis=0), grads_b
)
print("examples clipped:", int(jnp.sum(formed > C)), "of", len(formed))
print(
    "max |clipped_grad − mean of clipped per-example grads|:",
    max(
        float(jnp.abs(a - b).max())
        for a, b in zip(jax.tree.leaves(clipped), jax.tree.leaves(by_hand))
    ),
)

# %% [markdown]
# DP-SGD then adds Gaussian noise of standard deviation $σC/B$ to the clipped mean:
# `noise_multiplier=σ` and a `key` (split a fresh one every step). The noise is drawn as
# `optax.contrib.differentially_private_aggregate` draws it, but without forming the $B$
# gradients that transform needs. Its empirical standard deviation:

# %%
sigma = 1.0
_, noisy = fnn.clipped_grad(
    net,
    params,
    xb,
    yb,
    max_norm=C,
    loss="softmax_cross_entropy",
    noise_multiplier=sigma,
    key=jax.random.key(7),
)
noise = jnp.concatenate(
    [(a - b).ravel() for a, b in zip(jax.tree.leaves(noisy), jax.tree.leaves(clipped))]
)
print(f"std of the noise {float(noise.std()):.5f}, σC/B = {sigma * C / len(xb):.5f}")

# %% [markdown]
# DP-SGD training is then [`training.fit`][fnn.training.fit] with `max_norm=C` (every
# step's gradient is the clipped mean) and `noise_multiplier=σ` (the noise of step $k$
# drawn from a key split off `fit`'s own key, so a run is reproducible and resumable).
# Beside it, from the same key, the run with clipping only and plain training. (No privacy
# accounting here: this shows the mechanics, not a privacy guarantee.)

# %%
runs = {
    "plain": {},
    f"clipped (C = {C})": {"max_norm": C},
    f"DP-SGD (C = {C}, σ = {sigma})": {"max_norm": C, "noise_multiplier": sigma},
}
for name, dp in runs.items():
    start = time.perf_counter()
    params_dp, _ = training.fit(
        net,
        params0,
        X[train],
        labels[train],
        optax.sgd(0.2, momentum=0.9),
        key=jax.random.key(2),
        loss="softmax_cross_entropy",
        epochs=15,
        batch_size=64,
        progress=False,
        **dp,
    )
    logits = fnn.apply(net, params_dp, X[test])
    accuracy = float(jnp.mean(jnp.argmax(logits, axis=1) == labels[test]))
    print(f"{name:<26} test accuracy {accuracy:.1%}, {time.perf_counter() - start:.1f} s")

# %% [markdown]
# ## S25 — gradient statistics of a mini-batch
#
# The per-example gradients also give the batch's second moment and variance per
# parameter, $\frac1B \sum_b (∇L_b)^2 - (\frac1B \sum_b ∇L_b)^2$:
# [`fnn.gradient_statistics`][fnn.gradient_statistics].

# %%
stats = fnn.gradient_statistics(net, trained["Adam"], xb, yb, loss="softmax_cross_entropy")
variance = jax.tree.map(lambda g: jnp.mean(g**2, axis=0) - jnp.mean(g, axis=0) ** 2, grads_b)
print(
    "max |variance − from grads_b|:",
    max(
        float(jnp.abs(a - b).max())
        for a, b in zip(jax.tree.leaves(stats["variance"]), jax.tree.leaves(variance))
    ),
)
print(
    "sum_sq equals Σ_b (∇L_b)²:",
    all(
        bool(jnp.allclose(a, jnp.sum(b**2, axis=0), rtol=1e-5, atol=1e-7))
        for a, b in zip(jax.tree.leaves(stats["sum_sq"]), jax.tree.leaves(grads_b))
    ),
)
