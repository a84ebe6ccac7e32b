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
# # 8. Training with curvature: K-FAC and Hessian-free
#
# Tutorial 7 derived the Gauss–Newton product $G v = J^\top H_L J v$ and K-FAC's Kronecker
# factors by hand. Here they train. A second-order step solves the local quadratic model
#
# $$L(\theta + d) \approx L(\theta) + g^\top d + \tfrac12 d^\top G d, \qquad
#   (G + \lambda I)\, d = -g,$$
#
# with the Levenberg–Marquardt damping $\lambda$ raised when the model over-promises
# ($\rho$ = actual / predicted reduction $< 1/4$) and lowered when it is right ($\rho > 3/4$).
#
# * `fnn.optim.kfac` replaces each layer's block of $G$ by $G^{(i)} \otimes A^{(i)}$
#   (`fnn.kfac_factors`) and inverts factor by factor:
#   $\Delta\hat W = -\eta\,(G + \sqrt\lambda I)^{-1}\nabla_{\hat W} L\,(A + \sqrt\lambda I)^{-1}$.
# * `fnn.optim.hessian_free` never forms $G$: conjugate gradient solves the system with one
#   `fnn.ggn_vp` per iteration.
#
# Both are optax transformations whose `update` also takes the batch, `x=` and `y=`;
# `fnn.training.fit` passes it.

# %%
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import fnn  # noqa: E402
from fnn import optim  # noqa: E402

# %% [markdown]
# ## One layer, one example: K-FAC is the natural-gradient step
#
# With one layer and one example, $G \otimes A$ *is* the Gauss–Newton matrix, so K-FAC's
# step is the damped natural-gradient step. Dense linear algebra, by JAX alone, agrees.

# %%
net = fnn.MLP((3, 4), ("identity",))
params = fnn.init(jax.random.key(0), net, dtype=jnp.float64)
x, y = jnp.array([0.5, -1.0, 2.0]), jnp.array(2)
loss, lam = "softmax_cross_entropy", 0.1

opt = optim.kfac(net, learning_rate=1.0, damping=lam, loss=loss)
grads = fnn.value_and_grad(net, params, x, y, loss=loss)[1]["params"]
updates, state = opt.update(grads, opt.init(params), params, x=x, y=y)

W_hat = jnp.concatenate([params[0]["b"][:, None], params[0]["W"]], axis=1)  # Ŵ = [b, W]
z_bar = jnp.concatenate([jnp.ones(1), x])
ce = fnn.losses.get(loss).fn
g = jax.grad(lambda V: ce(V @ z_bar, y))(W_hat).reshape(-1)
J = jax.jacfwd(lambda V: V @ z_bar)(W_hat).reshape(4, -1)
H_L = jax.hessian(ce)(W_hat @ z_bar, y)
GGN, G, A = J.T @ H_L @ J, H_L, jnp.outer(z_bar, z_bar)
s = jnp.sqrt(lam)
damped = GGN + s * jnp.kron(G, jnp.eye(4)) + s * jnp.kron(jnp.eye(4), A) + lam * jnp.eye(16)
natural = -jnp.linalg.solve(damped, g)
kfac_step = jnp.concatenate([updates[0]["b"][:, None], updates[0]["W"]], axis=1).reshape(-1)
print("‖GGN − G⊗A‖        =", float(jnp.abs(GGN - jnp.kron(G, A)).max()))
print("‖K-FAC − natural‖  =", float(jnp.abs(kfac_step - natural).max()))

# %% [markdown]
# ## Conjugate gradient converges to the dense solve
#
# Hessian-free's step after $n$ CG iterations, against $(G + \lambda I)^{-1}(-g)$ with the
# dense $G$ built from JAX's Jacobian: the error falls as $n$ grows, and vanishes at $n = P$.

# %%
net = fnn.MLP((2, 4, 1), ("tanh", "identity"))
params = fnn.init(jax.random.key(1), net, dtype=jnp.float64)
x = jax.random.normal(jax.random.key(2), (8, 2), jnp.float64)
y = jnp.sin(x[:, :1] * x[:, 1:])
theta, unravel = ravel_pytree(params)
J = jax.vmap(lambda xb: jax.jacfwd(lambda t: fnn.apply(net, unravel(t), xb))(theta))(x)
G = 2 * jnp.einsum("bmp,bmq->pq", J, J) / x.shape[0]  # H_L = 2I for l2
g = ravel_pytree(fnn.value_and_grad(net, params, x, y)[1]["params"])[0]
exact = -jnp.linalg.solve(G + 0.1 * jnp.eye(theta.size), g)
for n in (1, 3, 6, 12, theta.size):
    hf = optim.hessian_free(net, damping=0.1, cg_iterations=n, adapt_damping=False)
    grads = fnn.value_and_grad(net, params, x, y)[1]["params"]
    d = ravel_pytree(hf.update(grads, hf.init(params), params, x=x, y=y)[0])[0]
    print(f"n = {n:2d}: ‖d − exact‖ = {float(jnp.linalg.norm(d - exact)):.2e}")

# %% [markdown]
# ## Training on the sine curve with fit
#
# The 1-3-1 tanh network of Bishop Fig. 5.3 on 50 points, full batch, 30 epochs (one step
# each) from the same initial parameters. `fit` passes the batch to the second-order
# optimizers; clipping and schedules compose through `optax.chain` as usual.

# %%
jax.config.update("jax_enable_x64", False)
net = fnn.MLP((1, 3, 1), ("tanh", "identity"))
x = jax.random.uniform(jax.random.key(3), (50, 1), minval=-1, maxval=1)
y = jnp.sin(x)
params = fnn.init(jax.random.key(0), net)
optimizers = {
    "Adam": optax.adam(3e-2),
    "K-FAC": optim.kfac(net, learning_rate=1.0, damping=0.1),
    "Hessian-free": optim.hessian_free(net, damping=0.1, cg_iterations=10),
    "K-FAC, clipped": optax.chain(
        optax.clip_by_global_norm(1.0), optim.kfac(net, learning_rate=1.0, damping=0.1)
    ),
}
for name, optimizer in optimizers.items():
    start = time.perf_counter()
    _, history = fnn.training.fit(
        net=net, params=params, x=x, y=y, optimizer=optimizer, key=jax.random.key(1),
        epochs=30, batch_size=None,
    )  # fmt: skip
    print(
        f"{name:15s} loss after 1, 10, 30 epochs: "
        + ", ".join(f"{history.epoch_loss[i]:.2e}" for i in (0, 9, 29))
        + f"   ({time.perf_counter() - start:.1f} s with compilation)"
    )

# %% [markdown]
# The comparison on the digits (K-FAC against Adam in epochs to 97 % test accuracy, and
# against kfac-jax in time per epoch) is `scripts/train_second_order.py`; its figure:
# loss against epochs and against seconds, for both problems.
