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
# # 1. From a neuron to a network
#
# The lecture builds a feed-forward network in five steps: one neuron (S1), a layer of
# neurons (S2), the augmented notation (S3), a stack of layers with its parameters (S4) and
# Bishop's way of counting layers (S5). Then it asks what such a network can represent:
# nothing more than an affine map without a non-linearity (S8), many parameter vectors for
# one function (S9), and — with three tanh units — a good approximation of quite different
# functions (S10, Bishop Fig. 5.3). Every step below is one fnn function; the cells run when
# the site is built.

# %%
import math

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import optax

import fnn
from fnn import network, symmetry, training

# %% [markdown]
# ## S1 — one neuron
#
# A neuron weighs its inputs, adds a bias and applies an activation:
# $a = \sum_i w_i x_i + b$, $z = f(a)$.
# [`fnn.network.neuron`][fnn.network.neuron] is exactly that line.

# %%
w = jnp.array([0.5, -1.0, 2.0])
b = 0.1
x = jnp.array([1.0, 2.0, 0.5])

a = w @ x + b  # 0.5 − 2 + 1 + 0.1 = −0.4
print("a =", a, "  σ(a) =", jax.nn.sigmoid(a))
print("fnn.network.neuron:", network.neuron(w, b, x, f="sigmoid"))

# %% [markdown]
# ## S2 — a layer of M neurons
#
# Stack the M weight vectors as the rows of $W \in \mathbb{R}^{M \times D}$ (outputs ×
# inputs, the lecture's convention and `W.shape` in fnn): $a = W x + b$, $z = f(a)$.
# Row $m$ of a layer is neuron $m$.

# %%
W = jnp.array([[0.5, -1.0, 2.0], [1.0, 0.0, -1.0]])  # M = 2 neurons, D = 3 inputs
b = jnp.array([0.1, -0.2])
a, z = network.layer({"W": W, "b": b}, x, "tanh")
print("a =", a, " z =", z)
print("row 0 as a neuron:", network.neuron(W[0], b[0], x, f="tanh"))

# %% [markdown]
# ## S3 — the augmented notation
#
# Put the bias in front of the weights and a 1 in front of the input:
# $a = [b, W]\,[1; x] = \hat W \hat x$. [`augment`][fnn.network.augment] and
# [`split_augmented`][fnn.network.split_augmented] convert both ways, and
# [`apply_augmented`][fnn.network.apply_augmented] runs a whole network that way.

# %%
W_hat = network.augment({"W": W, "b": b})
x_hat = jnp.concatenate([jnp.ones(1), x])
print("Ŵ =\n", W_hat)
print("Ŵ x̂ =", W_hat @ x_hat, " = W x + b =", W @ x + b)
print("round trip:", network.split_augmented(W_hat))

# %% [markdown]
# ## S4 — a network, its parameters, its initialisation
#
# An [`MLP`][fnn.network.MLP] is static configuration: the widths $(D, M^1, \dots, M^N)$ and
# one activation per layer, the last one being the output activation. The parameters
# θ = ((W¹, b¹), …, (Wᴺ, bᴺ)) are a plain pytree — a list of dicts — made by
# [`fnn.init`][fnn.network.init] from an explicit PRNG key: the same key gives the same
# parameters.

# %%
net = fnn.MLP(sizes=(3, 4, 4, 2), activations=("tanh", "tanh", "identity"))
params = fnn.init(jax.random.key(0), net)
for i, layer_params in enumerate(params, start=1):
    print(f"layer {i}:", {k: v.shape for k, v in layer_params.items()})

again = fnn.init(jax.random.key(0), net)
print(
    "same key, same parameters:",
    all(bool(jnp.array_equal(p["W"], q["W"])) for p, q in zip(params, again)),
)

# %% [markdown]
# The network function is the composition
# $nn_θ(x) = f^{out}(W^{(3)} f^{(2)}(W^{(2)} f^{(1)}(W^{(1)} x + b^{(1)}) + b^{(2)}) + b^{(3)})$.
# [`fnn.apply`][fnn.network.apply] takes one example `(D,)` or a batch `(B, D)`;
# [`fnn.forward_pass`][fnn.network.forward_pass] also returns what backpropagation needs later, the
# cache $(z^{(i-1)}, a^{(i)}, z^{(i)})$ of every layer. The composition written out by hand
# gives the same numbers:

# %%
y = fnn.apply(net, params, x)
z_ = x
for layer_params, f in zip(params, net.activations):
    z_ = fnn.activations.get(f).fn(layer_params["W"] @ z_ + layer_params["b"])
print("fnn.apply:", y, "  by hand:", z_)

X = jax.random.normal(jax.random.key(1), (5, 3))
print("a batch:", fnn.apply(net, params, X).shape)
y, caches = fnn.forward_pass(net, params, x)
print("cache of layer 1:", {k: v.shape for k, v in caches[0]._asdict().items()})
print("the augmented network agrees:", jnp.allclose(network.apply_augmented(net, params, x), y))

# %% [markdown]
# The initialisation schemes differ in the standard deviation of $W$: Glorot/Xavier
# $\sqrt{2/(D+M)}$, He $\sqrt{2/D}$ (for ReLU), LeCun $\sqrt{1/D}$, and a plain `normal`
# scaled by `scale`. Measured on a wide layer:

# %%
wide = fnn.MLP((400, 100, 1), ("relu", "identity"))
print(f"{'scheme':<15} {'std of W¹':>10} {'formula':>10}")
expected = {
    "glorot_normal": math.sqrt(2 / 500),
    "he_normal": math.sqrt(2 / 400),
    "lecun_normal": math.sqrt(1 / 400),
    "normal": 1.0,
}
for scheme, std in expected.items():
    W1 = fnn.init(jax.random.key(2), wide, scheme=scheme)[0]["W"]
    print(f"{scheme:<15} {float(W1.std()):>10.4f} {std:>10.4f}")

# %% [markdown]
# ## S5 — counting layers like Bishop
#
# Bishop counts weight matrices, not unit layers: the network above has 3 layers, 8 hidden
# units and $4\cdot3+4 + 4\cdot4+4 + 2\cdot4+2 = 46$ parameters.
# [`fnn.summary`][fnn.network.summary]:

# %%
print(fnn.summary(net))

# %% [markdown]
# ## S8 — why non-linear: linear layers collapse
#
# With the identity as every hidden activation the network is one affine map,
# $W = W^{(N)} \cdots W^{(1)}$ and $b = W^{(N)}(\cdots(W^{(2)} b^{(1)} + b^{(2)})\cdots) + b^{(N)}$.
# [`symmetry.collapse`][fnn.symmetry.collapse] computes it; depth buys nothing.

# %%
linear = fnn.MLP((3, 8, 8, 2), ("identity", "identity", "identity"))
lin_params = fnn.init(jax.random.key(3), linear)
lin_params[0]["b"] = jnp.arange(8.0) / 10  # non-zero biases, so that b matters
W_c, b_c = symmetry.collapse(linear, lin_params)
print(
    "one matrix:",
    W_c.shape,
    " max |nn(X) − (W X + b)| =",
    float(jnp.abs(fnn.apply(linear, lin_params, X) - (X @ W_c.T + b_c)).max()),
)

# %% [markdown]
# ## S9 — many parameter vectors, one function
#
# Permuting the $M$ hidden units of a layer (their rows of $W^{(i)}$, biases and columns
# of $W^{(i+1)}$) changes θ but not the function: $M!$ ways. For an odd activation such as
# tanh, flipping the signs of a unit's in- and out-weights too: $2^M$ ways. Sigmoid can be
# flipped with a bias correction, since $σ(−a) = 1 − σ(a)$.

# %%
perm = jnp.array([3, 1, 0, 2])
permuted = symmetry.permute(net, params, 0, perm)
flipped = symmetry.flip(net, params, 1, jnp.array([True, False, True, False]))
for name, p in [("permuted", permuted), ("sign-flipped", flipped)]:
    d_theta = max(float(jnp.abs(p[i]["W"] - params[i]["W"]).max()) for i in range(2))
    d_f = float(jnp.abs(fnn.apply(net, p, X) - fnn.apply(net, params, X)).max())
    print(f"{name:>13}: θ changed by {d_theta:.3f}, function changed by {d_f:.1e}")

sig = fnn.MLP((3, 4, 1), ("sigmoid", "identity"))
sig_params = fnn.init(jax.random.key(4), sig)
sig_flipped = symmetry.flip(sig, sig_params, 0, jnp.array([True, True, False, False]))
print(
    "sigmoid flip (with bias correction):",
    float(jnp.abs(fnn.apply(sig, sig_flipped, X) - fnn.apply(sig, sig_params, X)).max()),
)
print(
    "M!·2^M for M = 4:",
    symmetry.symmetry_count(4),
    "  for the whole network:",
    symmetry.network_symmetry_count(net),
)

# %% [markdown]
# ## S10 — three tanh units approximate a lot (Bishop Fig. 5.3)
#
# A 1-3-1 network, tanh hidden units and a linear output, trained on $N = 50$ points drawn
# uniformly in $(−1, 1)$ for $x^2$, $\sin x$, $|x|$ and the Heaviside step $H(x)$. The
# training uses fnn's own gradient through optax
# ([`training.train_step`][fnn.training.train_step], full batch, Adam); four restarts per
# function train at once under `jax.vmap`, the best one is drawn. Dashed: the three hidden
# units' contributions $w^{(2)}_j \tanh(w^{(1)}_j x + b^{(1)}_j)$, which add up to the fit
# minus the output bias. (`scripts/bishop_fig5_3.py` draws the full figure.)

# %%
bishop = fnn.MLP((1, 3, 1), ("tanh", "identity"))
targets = {
    "x²": lambda x: x**2,
    "sin(x)": jnp.sin,
    "|x|": jnp.abs,
    "H(x)": lambda x: jnp.where(x > 0, 1.0, 0.0),
}
steps = 2000
optimizer = optax.adam(optax.cosine_decay_schedule(0.05, steps, alpha=0.01))


@jax.jit
def train(keys, x, y):
    def one_run(key):
        p = fnn.init(key, bishop, scale=2.0)

        def step(carry, _):
            p, s = carry
            p, s, L = training.train_step(bishop, p, x, y, optimizer, s)
            return (p, s), L

        (p, _), L = jax.lax.scan(step, (p, optimizer.init(p)), length=steps)
        return p, L

    return jax.vmap(one_run)(keys)


x_data = jax.random.uniform(jax.random.key(5), (50, 1), minval=-1, maxval=1)
grid = jnp.linspace(-1, 1, 200)[:, None]
fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
for ax, (name, f) in zip(axes, targets.items()):
    y_data = f(x_data)
    runs, L = train(jax.random.split(jax.random.key(6), 4), x_data, y_data)
    best = int(jnp.argmin(L[:, -1]))
    p = jax.tree.map(lambda leaf, best=best: leaf[best], runs)
    hidden = jnp.tanh(grid @ p[0]["W"].T + p[0]["b"]) * p[1]["W"][0]
    ax.plot(x_data, y_data, "o", ms=3, color="tab:blue")
    ax.plot(grid, fnn.apply(bishop, p, grid), color="tab:red", lw=2)
    ax.plot(grid, hidden, "--", lw=1)
    ax.set_title(f"{name}  (MSE {float(L[best, -1]):.1e})")
fig.tight_layout()
plt.show()

# %% [markdown]
# Next: [tutorial 2](02_activations_losses.html) writes down the derivative of every activation
# and loss by hand, and proves each one.
