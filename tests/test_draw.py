"""The picture of a pass (S23): one box per unit, one edge per weight with its ∂L/∂W, the
numbers of the trace on them, as a matplotlib figure and as SVG; refusals by name."""

import itertools
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnn
from fnn import draw

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def lecture():
    """The 2-2-1 network of tutorial 3 and its trace of one example."""
    net = fnn.MLP(sizes=(2, 2, 1), activations=("sigmoid", "identity"))
    params = [
        {"W": jnp.array([[0.1, 0.2], [-0.3, 0.4]]), "b": jnp.array([0.0, 0.1])},
        {"W": jnp.array([[0.5, -0.6]]), "b": jnp.array([0.2])},
    ]
    return fnn.backprop_trace(net, params, jnp.array([1.0, 2.0]), jnp.array([1.0]), loss="l2")


@pytest.fixture(scope="module")
def batch():
    """A 3-5-4-2 PReLU/tanh/softmax network, a batch of 3."""
    net = fnn.MLP((3, 5, 4, 2), ("prelu", "tanh", "softmax"))
    params = fnn.init(jax.random.key(0), net)
    x = jax.random.normal(jax.random.key(1), (3, 3))
    return fnn.backprop_trace(net, params, x, jnp.array([0, 1, 1]), loss="cross_entropy")


def by_gid(fig, gid):
    ax = fig.axes[0]
    return [a for a in (*ax.patches, *ax.lines, *ax.texts) if a.get_gid() == gid]


@pytest.mark.parametrize("name", ["lecture", "batch"])
def test_figure_has_a_box_per_unit_and_an_edge_per_weight(name, request):
    plt = pytest.importorskip("matplotlib.pyplot")  # the figures extra
    plt.switch_backend("Agg")
    t = request.getfixturevalue(name)
    sizes = t.net.sizes
    weights = sum(m * d for d, m in itertools.pairwise(sizes))
    fig = t.plot(example=len(sizes) % 2 if name == "batch" else 0)
    assert len(by_gid(fig, "unit")) == sum(sizes) and len(by_gid(fig, "loss")) == 1
    assert len(by_gid(fig, "edge")) == len(by_gid(fig, "edge-label")) == weights
    assert len(by_gid(fig, "unit-label")) == sum(sizes) + 1
    assert len(by_gid(fig, "to-loss")) == sizes[-1]
    plt.close(fig)


def test_the_numbers_on_the_picture_are_the_trace(lecture):
    """a, z, δ on every unit, ∂L/∂W on every edge (4 significant digits), edge width grows
    with |∂L/∂W|."""
    pic = draw.picture(lecture)
    hidden = [u for u in pic.units if u.kind == "hidden"]
    t1 = lecture.layers[0]
    for m, u in enumerate(hidden):
        assert u.lines == tuple(
            f"{k} = {float(v[m]):.4g}" for k, v in (("a", t1.a), ("z", t1.z), ("δ", t1.dL_da))
        )
    for e in pic.edges:
        assert e.grad == float(lecture.layers[e.layer - 1].dL_dW[e.m, e.d])
    order = sorted(pic.edges, key=lambda e: abs(e.grad))
    assert [e.width for e in order] == sorted(e.width for e in order)
    assert {e.colour for e in pic.edges if e.grad < 0} == {"#1f77b4"}


def test_one_example_of_a_batch(batch):
    """example=b draws row b of every field."""
    pic = draw.picture(batch, example=2)
    out = [u for u in pic.units if u.kind == "output"]
    assert out[1].lines[1] == f"z = {float(batch.layers[-1].z[2, 1]):.4g}"
    edge = next(e for e in pic.edges if (e.layer, e.m, e.d) == (2, 3, 4))
    assert edge.grad == float(batch.layers[1].dL_dW[2, 3, 4])


@pytest.mark.parametrize("name", ["lecture", "batch"])
def test_svg_parses_and_has_every_unit_edge_and_label(name, request):
    t = request.getfixturevalue(name)
    sizes = t.net.sizes
    root = ET.fromstring(t._repr_svg_())
    assert root.tag == SVG + "svg"

    def count(tag, cls):
        return sum(1 for el in root.iter(SVG + tag) if el.get("class") == cls)

    weights = sum(m * d for d, m in itertools.pairwise(sizes))
    assert count("rect", "unit") == sum(sizes) and count("rect", "loss") == 1
    assert count("line", "edge") == count("text", "edge-label") == weights
    assert count("text", "unit-label") == sum(sizes) + 1
    assert all(el.find(SVG + "title") is not None for el in root.iter(SVG + "line")
               if el.get("class") == "edge")  # fmt: skip
    text = "".join(root.itertext())
    assert f"δ = {float(np.ravel(t.layers[0].dL_da)[0]):.4g}" in text


def test_a_nan_edge_is_drawn_not_hidden(lecture):
    bad = lecture._replace(
        layers=(lecture.layers[0]._replace(dL_dW=lecture.layers[0].dL_dW.at[0, 1].set(jnp.nan)),
                lecture.layers[1])
    )  # fmt: skip
    pic = draw.picture(bad)
    edge = next(e for e in pic.edges if (e.layer, e.m, e.d) == (1, 0, 1))
    assert np.isnan(edge.grad) and edge.colour == "#9467bd"
    ET.fromstring(bad.svg())


def test_refuses_a_wide_network_by_name():
    net = fnn.MLP((784, 16, 10), ("relu", "identity"))
    params = fnn.init(jax.random.key(0), net)
    t = fnn.backprop_trace(net, params, jnp.ones(784), jnp.zeros(10))
    match = r"the widest layer needs 784 units, over max_units=10 units\. print\(trace\)"
    with pytest.raises(ValueError, match=match):
        t.svg()
    assert t._repr_svg_() is None  # a notebook falls back to the text
    with pytest.raises(ValueError, match="max_units=20 units"):
        draw.picture(t, max_units=20)


@pytest.mark.parametrize(
    "example, error, match",
    [
        (3, ValueError, r"example must be in \[0, 3\) for the trace of a batch of 3; got 3"),
        (1.0, TypeError, "example must be an int; got 1.0"),
    ],
)
def test_bad_example_raises(batch, example, error, match):
    with pytest.raises(error, match=match):
        batch.svg(example=example)


def test_one_example_has_only_example_zero(lecture):
    with pytest.raises(ValueError, match=r"one example \(use example=0\); got 1"):
        lecture.svg(example=1)
    with pytest.raises(ValueError, match="max_units must be a positive integer; got 0"):
        lecture.svg(max_units=0)
