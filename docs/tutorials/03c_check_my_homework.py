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
# # 3c. Check my homework
#
# The way to learn backpropagation is to do one backward pass by hand. The hard part is
# not the arithmetic but knowing *where* it went wrong: one slip early on changes every
# number after it. [`fnn.homework`][fnn.homework] makes an exercise from a seed, gives you a
# blank worksheet with every number in the order the passes compute it, and marks it:
#
# * ✓ — right;
# * ✓\* — *right given your earlier value*: the step was done right, on a wrong input;
# * ✗ — wrong, with the right value; for the **first** wrong number, the step is redone
#   from your own earlier numbers under the common wrong rules (f′ at $z$ instead of $a$,
#   f′ left out, $W$ instead of $W^\top$, the factor 2 of the L2 loss dropped, a flipped
#   sign, $z^{(i)}$ instead of $z^{(i-1)}$ in $∂L/∂W^{(i)}$, …) and the rule that gives your
#   number is named.
#
# The same from the shell:
#
# ```bash
# python -m fnn.homework new --seed 3 > sheet.json    # fill in the "answers"
# python -m fnn.homework check sheet.json
# ```

# %%
import matplotlib.pyplot as plt
import numpy as np

from fnn import homework

# %% [markdown]
# ## The exercise
#
# Seed 3 gives a three-layer network $2 \to 2 \to 2 \to 1$ with weights of one decimal, a
# linear output and the L2 loss $L = \sum_i (\hat y_i - y_i)^2$:

# %%
ex = homework.exercise(3)
print(ex)

# %% [markdown]
# The worksheet: for $i = 1 … N$ the forward pass $a^{(i)} = W^{(i)} z^{(i-1)} + b^{(i)}$,
# $z^{(i)} = f(a^{(i)})$ (with $z^{(0)} = x$), the loss, then from the last layer to the
# first
#
# $$
# \frac{∂L}{∂z^{(N)}} = 2(\hat y - y), \quad
# \frac{∂L}{∂z^{(i)}} = W^{(i+1)\top} δ^{(i+1)}, \quad
# δ^{(i)} = \frac{∂L}{∂z^{(i)}} \odot f'(a^{(i)}), \quad
# \frac{∂L}{∂W^{(i)}} = δ^{(i)} z^{(i-1)\top}, \quad
# \frac{∂L}{∂b^{(i)}} = δ^{(i)} .
# $$

# %%
sheet = homework.worksheet(ex)
for key, blank in sheet["answers"].items():
    print(f"{key:9} {blank}")

# %% [markdown]
# ## A student's sheet, with one slip
#
# Here is a sheet filled in by hand, every number rounded to four decimals as it was
# written down. Our student computed $δ^{(2)}$ with the sigmoid's derivative evaluated at
# $z^{(2)}$ — a very common slip, because $σ'(a) = σ(a)(1 - σ(a))$ *is* written with
# $z = σ(a)$ — and then carried on correctly from that wrong value.


# %%
def sig(t):
    return 1 / (1 + np.exp(-t))


def r4(v):  # written down to four decimals
    return np.round(v, 4)


W = [p["W"] for p in ex.params]
b = [p["b"] for p in ex.params]

a1 = r4(W[0] @ ex.x + b[0])
z1 = r4(sig(a1))
a2 = r4(W[1] @ z1 + b[1])
z2 = r4(sig(a2))
a3 = r4(W[2] @ z2 + b[2])
z3 = a3
L = r4(np.sum((z3 - ex.y) ** 2))
g3 = r4(2 * (z3 - ex.y))
d3 = g3
g2 = r4(W[2].T @ d3)
d2 = r4(g2 * sig(z2) * (1 - sig(z2)))  # the slip: σ′ at z², not at a²
g1 = r4(W[1].T @ d2)
d1 = r4(g1 * z1 * (1 - z1))

answers = {
    "a[1]": a1, "z[1]": z1, "a[2]": a2, "z[2]": z2, "a[3]": a3, "z[3]": z3, "L": L,
    "dL/dz[3]": g3, "delta[3]": d3, "dL/dW[3]": r4(np.outer(d3, z2)), "dL/db[3]": d3,
    "dL/dz[2]": g2, "delta[2]": d2, "dL/dW[2]": r4(np.outer(d2, z1)), "dL/db[2]": d2,
    "dL/dz[1]": g1, "delta[1]": d1, "dL/dW[1]": r4(np.outer(d1, ex.x)), "dL/db[1]": d1,
}  # fmt: skip

# %% [markdown]
# ## The marking

# %%
marking = homework.check(ex, {k: np.asarray(v).tolist() for k, v in answers.items()})
print(marking)

# %% [markdown]
# Everything before $δ^{(2)}$ is right. $δ^{(2)}$ is the first wrong number, and
# recomputing that step from the student's own $∂L/∂z^{(2)}$ under the common wrong rules
# finds the one that gives exactly their numbers: f′ evaluated at $z^{(2)}$. Every number
# after it was computed correctly *from* the wrong $δ^{(2)}$ — $∂L/∂W^{(2)}$, $∂L/∂b^{(2)}$ and
# all of layer 1 — so it is marked ✓\* rather than ✗: one slip, not a page of them.
#
# The reference values are fnn's own: [`fnn.backprop_trace`][fnn.traces.backprop_trace] of the same network, the
# table of every intermediate of one forward and backward pass (S23).
#
# ## The marked sheet as a picture
#
# One row per quantity, in the order the passes compute them; one square per number.

# %%
colour = {"right": "#4caf50", "right given your earlier value": "#ffb300"}
colour |= {"wrong": "#e53935", "blank": "#bdbdbd"}
rows = list(dict.fromkeys(m.key for m in marking.marks))
fig, ax = plt.subplots(figsize=(6.4, 4.6))
for r, key in enumerate(rows):
    marks = [m for m in marking.marks if m.key == key]
    for c, m in enumerate(marks):
        ax.add_patch(plt.Rectangle((c, -r - 0.9), 0.9, 0.8, color=colour[m.status]))
ax.set_yticks([-r - 0.5 for r in range(len(rows))], rows, fontsize=8)
ax.set_xticks([])
ax.set_xlim(-0.1, 4)
ax.set_ylim(-len(rows), 0)
for label, c in colour.items():
    ax.plot([], [], "s", color=c, label=label)
ax.legend(loc="lower right", fontsize=8)
ax.set_title("δ⁽²⁾ wrong: everything after it follows from it", fontsize=10)
ax.spines[:].set_visible(False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Your turn
#
# Pick a seed, write the sheet to a file, fill it in (JSON, or CSV for a spreadsheet:
# `--format csv`; a decimal comma such as `0,25` is read too), and check it. A teacher gets
# the filled-in solution with `--solution`. From Python, `homework.check(seed, "sheet.json")`
# does the same, and `homework.check(ex, answers)` takes a plain dict.

# %%
blank = homework.to_csv(homework.worksheet(homework.exercise(7, layers=2)))
print("\n".join(blank.splitlines()[:8]) + "\n…")
