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
# # 2b. The chain rule on a graph: paths against dynamic programming
#
# Before backpropagation through networks, the lecture asks a simpler question: how does
# the derivative travel through *any* computation? First the chain rule in one dimension
# and along a path (S12), then a graph in which the input reaches the output along several
# routes (S13). The lecture's answer has two halves: the derivative is the **sum over all
# paths** of the products of local derivatives — and nobody should compute it that way,
# because the number of paths explodes. **Dynamic programming** gives the same number with
# one multiplication per edge, from the input forward or from the output backward; the
# backward one is backpropagation. Everything here is [`fnn.graph`][fnn.graph].

# %%
import itertools

import jax
import matplotlib.pyplot as plt
import numpy as np

from fnn import graph

jax.config.update("jax_enable_x64", True)

# %% [markdown]
# ## S12 — the chain rule, and the total derivative along a path
#
# In one dimension $(g \circ f)'(x) = g'(f(x))\, f'(x)$. For $g = \sin$, $f(x) = x^2$:

# %%
x0 = 1.3
by_rule = graph.chain_rule(np.cos, lambda x: x**2, lambda x: 2 * x, x0)
by_jax = jax.grad(lambda x: jax.numpy.sin(x**2))(x0)
print(f"chain rule {float(by_rule):.6f}   jax.grad {float(by_jax):.6f}")

# %% [markdown]
# When $f(x, y)$ is evaluated along a path $(x(s), y(s))$, $s$ reaches $f$ twice — through
# $x$ and through $y$ — and the **total derivative** adds one term per route:
#
# $$
# \frac{df}{ds} = \frac{∂f}{∂x}\frac{dx}{ds} + \frac{∂f}{∂y}\frac{dy}{ds} .
# $$
#
# For $f = x^2 y$ on the unit circle $x = \cos s$, $y = \sin s$:

# %%
s = 0.7
xs, ys = np.cos(s), np.sin(s)
partials = (2 * xs * ys, xs**2)  # ∂f/∂x, ∂f/∂y
tangents = (-np.sin(s), np.cos(s))  # dx/ds, dy/ds
total = graph.total_derivative(partials, tangents)
exact = jax.grad(lambda s: jax.numpy.cos(s) ** 2 * jax.numpy.sin(s))(s)
print(f"total derivative {total:.6f}   jax.grad {float(exact):.6f}")

# %% [markdown]
# ## S13 — the lecture's graph
#
# $s \to x, y, z \to f \to g, h \to L$ with $x = s^2$, $y = \sin s$, $z = e^{-s}$,
# $f = xy + z^2$, $g = \tanh f$, $h = \cos f$, $L = g h$. Each edge carries its local
# partial derivative $∂\,\text{child}/∂\,\text{parent}$, computed in the forward pass.

# %%
g = graph.lecture_graph()
s = 0.5
values = graph.evaluate(g, s)
edge = {e: float(d) for e, d in graph.local_partials(g, values).items()}

pos = {"s": (0, 0), "x": (1, 1), "y": (1, 0), "z": (1, -1), "f": (2, 0)}
pos |= {"g": (3, 0.6), "h": (3, -0.6), "L": (4, 0)}
fig, ax = plt.subplots(figsize=(7, 3.2))
for (child, parent), d in edge.items():
    (x0, y0), (x1, y1) = pos[parent], pos[child]
    ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "0.4"})
    ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.08, f"{d:+.3f}", ha="center", fontsize=8,
            color="C3")  # fmt: skip
for name, (px, py) in pos.items():
    ax.text(px, py, name, ha="center", va="center", fontsize=12,
            bbox={"boxstyle": "circle", "fc": "white", "ec": "C0"})  # fmt: skip
ax.set_title(f"the lecture's graph at s = {s}: each edge labelled ∂child/∂parent")
ax.set_xlim(-0.3, 4.3)
ax.set_ylim(-1.4, 1.4)
ax.axis("off")
plt.show()

# %% [markdown]
# ### The sum over paths
#
# $∂L/∂s$ is the sum, over every path from $s$ to $L$, of the product of the labels along
# it. Three ways from $s$ to $f$ times two ways from $f$ to $L$: six paths.

# %%
terms = []
for path in graph.paths(g):
    steps = list(itertools.pairwise(path))
    terms.append(np.prod([edge[c, p] for p, c in steps]))
    print(f"{' → '.join(path):20} {terms[-1]:+.6f}")
print(f"{'sum':20} {sum(terms):+.6f}")

# %% [markdown]
# ### The same number by dynamic programming, both ways
#
# *Forward accumulation* walks from the input: every node's $∂n/∂s$ is the sum over its
# parents $p$ of $∂n/∂p \cdot ∂p/∂s$. *Backward accumulation* walks from the output: every
# node's $∂L/∂n$ is the sum over its children $c$ of $∂L/∂c \cdot ∂c/∂n$. Each edge is used
# once. The forward walk gives every node's derivative with respect to the *input*; the
# backward walk gives the *output's* derivative with respect to every node — which is what
# training needs, one loss and many parameters.

# %%
paths = graph.sum_over_paths(g, edge, max_paths=100)
fwd = graph.forward_accumulation(g, edge)
bwd = graph.backward_accumulation(g, edge)
grad = jax.grad(lambda s: graph.evaluate(g, s)["L"])(s)
print(f"paths     ∂L/∂s = {paths.derivative:+.6f}  ({paths.ops.total} operations)")
print(f"forward   ∂L/∂s = {fwd.derivatives['L']:+.6f}  ({fwd.ops.total} operations)")
print(f"backward  ∂L/∂s = {bwd.derivatives['s']:+.6f}  ({bwd.ops.total} operations)")
print(f"jax.grad  ∂L/∂s = {float(grad):+.6f}")

# %% [markdown]
# ## Why the paths lose: a deeper graph
#
# A layered graph — $s$, then $d$ layers of $w$ nodes each connected to every node of the
# layer before, then $L$ — has $w^d$ paths but only $2w + (d - 1)w^2$ edges. The path sum's
# work grows with the paths, the dynamic programs' with the edges. Counted, operation by
# operation, for $w = 3$:

# %%
width, rows = 3, []
for depth in range(1, 9):
    lg = graph.layered_graph(depth, width, seed=depth)
    lab = {e: float(d) for e, d in graph.local_partials(lg, graph.evaluate(lg, 0.3)).items()}
    p = graph.sum_over_paths(lg, lab, max_paths=10_000)
    b = graph.backward_accumulation(lg, lab)
    assert np.isclose(p.derivative, b.derivatives["s"])
    rows.append((depth, p.num_paths, lg.num_edges, p.ops.total, b.ops.total))
print("depth   paths   edges   ops (paths)   ops (backward)")
for r in rows:
    print(f"{r[0]:5} {r[1]:7} {r[2]:7} {r[3]:13} {r[4]:16}")

# %%
d, n_paths, n_edges, ops_paths, ops_back = np.array(rows).T
fig, ax = plt.subplots(figsize=(6, 3.6))
ax.semilogy(d, ops_paths, "o-", label="sum over paths")
ax.semilogy(d, ops_back, "s-", label="backward accumulation")
ax.semilogy(d, n_paths, ":", color="0.5", label=f"number of paths, {width}^d")
ax.set_xlabel("depth d (layers of width 3)")
ax.set_ylabel("operations")
ax.set_title("same ∂L/∂s: exponential against linear in the depth")
ax.legend()
plt.show()

# %% [markdown]
# At depth 8 the path sum already does hundreds of times the work, and every further layer
# multiplies it by three; the dynamic programs add a constant. A network ten units wide and
# ten layers deep has $10^9$ paths from one unit of its first layer to the loss:
# backpropagation is what makes training possible at all. `scripts/path_explosion.py`
# runs the same count further and times it.
