"""The multiply-add model of forward and reverse accumulation (S17, S18)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnn
from fnn import cost_model


def _brute_force_chain(dims, i, j):
    """Cheapest product of factors i … j by trying every parenthesisation."""
    if i == j:
        return 0
    return min(
        _brute_force_chain(dims, i, s)
        + _brute_force_chain(dims, s + 1, j)
        + dims[j + 1] * dims[s + 1] * dims[i]
        for s in range(i, j)
    )


def _multiply_out(factors, from_the_left):
    """Multiply real matrices (shapes only) one by one, counting M·K·N per product."""
    total, (rows, cols) = 0, factors[0]
    for m, k in factors[1:]:
        if from_the_left:  # (m, k) @ running (rows, cols)
            assert k == rows
            total, rows = total + m * k * cols, m
        else:  # running (rows, cols) @ (m, k)
            assert cols == m
            total, cols = total + rows * cols * k, k
    return total


@settings(max_examples=30, deadline=None)
@given(dims=st.lists(st.integers(1, 40), min_size=2, max_size=7))
def test_chain_orders_count_what_multiplying_out_costs(dims):
    k = len(dims) - 1
    factors = [(dims[i + 1], dims[i]) for i in range(k)]  # factor i: dims[i] → dims[i+1]
    left_to_right = _multiply_out(factors[::-1], from_the_left=False)
    right_to_left = _multiply_out(factors, from_the_left=True)
    assert cost_model.chain_macs(dims, "left_to_right") == left_to_right
    assert cost_model.chain_macs(dims, "right_to_left") == right_to_left
    optimal = cost_model.chain_macs(dims, "optimal")
    assert optimal == _brute_force_chain(tuple(dims), 0, k - 1)
    assert optimal <= min(left_to_right, right_to_left)


def test_chain_dims_and_a_bottleneck_where_neither_end_order_is_best():
    assert cost_model.chain_dims((3, 4, 2)) == (3, 4, 4, 2, 2)
    dims = cost_model.chain_dims((10, 100, 1, 100, 10))
    both_ends = min(cost_model.chain_macs(dims, o) for o in ("left_to_right", "right_to_left"))
    assert cost_model.chain_macs(dims, "optimal") * 5 < both_ends


@pytest.mark.parametrize("hidden", [(256, 256), (7,), (50, 3, 50)])
@pytest.mark.parametrize("vary", ["output", "input"])
@pytest.mark.parametrize("fixed", [1, 10, 300])
def test_forward_and_reverse_break_even_where_input_and_output_widths_meet(hidden, vary, fixed):
    assert cost_model.crossover(hidden, fixed, vary) == pytest.approx(fixed, rel=1e-9)


def test_crossover_of_the_dense_chain_and_no_crossover():
    # The dense chain pays n² per J_f, so it loses to forward mode already below D_in.
    w = cost_model.crossover((64, 64), 10, "output", methods=("explicit", "forward"))
    assert 1 < w < 10
    with pytest.raises(ValueError, match="two different methods.*'forward', 'forward'"):
        cost_model.crossover((8,), 4, "output", methods=("forward", "forward"))
    assert cost_model.crossover((8,), 4, bounds=(20, 40)) is None
    with pytest.raises(ValueError, match="vary must be 'output' or 'input'; got 'middle'"):
        cost_model.crossover((8,), 4, "middle")
    with pytest.raises(ValueError, match="Unknown method 'sideways'"):
        cost_model.crossover((8,), 4, methods=("forward", "sideways"))


def test_jacobian_cost_ratio_and_choice_on_the_headline_networks():
    wide_in = fnn.MLP((784, 256, 256, 10), ("tanh", "tanh", "identity"))
    wide_out = fnn.MLP((10, 256, 256, 784), ("tanh", "tanh", "identity"))
    assert cost_model.jacobian_macs(wide_in, "forward") > 50 * cost_model.jacobian_macs(
        wide_in, "reverse"
    )
    assert cost_model.jacobian_macs(wide_out, "reverse") > 50 * cost_model.jacobian_macs(
        wide_out, "forward"
    )
    assert cost_model.choose_method(wide_in) == "reverse"
    assert cost_model.choose_method(wide_out) == "forward"
    with pytest.raises(ValueError, match="Unknown method 'auto'"):
        cost_model.jacobian_macs(wide_in, "auto")


@pytest.mark.parametrize("sizes", [(784, 256, 256, 10), (10, 256, 256, 784), (20, 30, 40), (5, 5)])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_model_agrees_with_xla_flop_count(sizes, mode):
    """XLA's own cost analysis of the compiled Jacobian: within 10 % of the model."""
    net = fnn.MLP(sizes, ("tanh",) * (len(sizes) - 2) + ("identity",))
    params = fnn.init(jax.random.key(0), net, dtype=jnp.float32)
    x = jnp.ones(sizes[0], jnp.float32)
    compiled = jax.jit(functools.partial(fnn.jacobian, net, method=mode)).lower(params, x).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    xla_macs = analysis["flops"] / 2
    assert xla_macs == pytest.approx(cost_model.jacobian_macs(net, mode), rel=0.1)


def test_forward_gradient_cost_grows_with_the_parameter_count():
    def ratio(width):
        net = fnn.MLP((10, width, width, 1), ("tanh", "tanh", "identity"))
        return cost_model.gradient_macs(net, "forward") / cost_model.gradient_macs(net, "reverse")

    # The ratio grows like P / (forward pass) ~ width: it (at least) doubles with the width.
    ratios = [ratio(w) for w in (8, 16, 32, 64)]
    assert all(b > 2 * a for a, b in itertools.pairwise(ratios))
    net = fnn.MLP((10, 8, 1), ("tanh", "identity"))
    num_params = fnn.summary(net).num_params
    assert cost_model.gradient_macs(net, "forward") > num_params * cost_model.pass_macs(net)
    assert cost_model.gradient_macs(net, "reverse", batch=4) == 4 * cost_model.gradient_macs(
        net, "reverse"
    )
    with pytest.raises(ValueError, match="Unknown method 'explicit'"):
        cost_model.gradient_macs(net, "explicit")
    with pytest.raises(ValueError, match="Unknown order 'zigzag'"):
        cost_model.chain_macs((1, 2), "zigzag")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: cost_model.chain_dims(()), ValueError, r"sizes must hold at least two"),
        (lambda: cost_model.chain_macs((5,), "optimal"), ValueError, r"dims .* got \(5,\)"),
        (lambda: cost_model.chain_macs((5, 0, 3)), ValueError, r"positive widths; got \(5, 0, 3\)"),
        (
            lambda: cost_model.jacobian_macs("784-10", "forward"),
            TypeError,
            "net must be an fnn.MLP",
        ),
        (
            lambda: cost_model.gradient_macs(fnn.MLP((2, 1), ("identity",)), "reverse", batch=0),
            ValueError,
            "batch must be a positive integer; got 0",
        ),
        (lambda: cost_model.crossover((8,), 4, bounds=(0, 10)), ValueError, r"0 < lo < hi"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------
# Exact counts, by hand, on networks small enough to count on paper.
# ---------------------------------------------------------------------------------------


def test_exact_multiply_adds_of_a_2_3_1_network_counted_by_hand():
    """D = 2 → 3 (tanh) → 1 (identity). W¹ t: 3·2 = 6, J_f¹ t = f′ ⊙ t: 3, W² t: 3, the
    identity's J_f: 0. The forward pass: 6 + 3 = 9."""
    net = fnn.MLP((2, 3, 1), ("tanh", "identity"))
    assert cost_model.pass_macs(net) == 6 + 3 + 3 + 0
    # Full Jacobians: the forward pass, then D_in = 2 tangent passes or M_out = 1 cotangent.
    assert cost_model.jacobian_macs(net, "forward") == 9 + 2 * 12
    assert cost_model.jacobian_macs(net, "reverse") == 9 + 1 * 12
    # The dense chain J_out · W² · J¹ · W¹ from the left: (1×1)(1×3) 3, (1×3)(3×3) 9,
    # (1×3)(3×2) 6.
    assert cost_model.jacobian_macs(net, "explicit") == 9 + 3 + 9 + 6
    # The reverse gradient: forward 9, the δ pass 12, the outer products δ ⊗ z: 3·2 + 1·3.
    assert cost_model.gradient_macs(net, "reverse") == 9 + 12 + (6 + 3)
    assert cost_model.gradient_macs(net, "reverse", batch=4) == 4 * 30
    # The forward gradient: one tangent pass per parameter (13) and input component (2).
    assert cost_model.gradient_macs(net, "forward") == 9 + (13 + 2) * 12


def test_softmax_costs_two_multiply_adds_per_unit_and_each_elementwise_f_one():
    # softmax: J t = s ⊙ (t − ⟨s, t⟩): ⟨s, t⟩ n, then s ⊙ (…) n — 2 per unit.
    softmax = fnn.MLP((2, 3), ("softmax",))
    assert cost_model.pass_macs(softmax) == 3 * 2 + 2 * 3
    for act in ("sigmoid", "relu", "prelu", "gelu"):
        assert cost_model.pass_macs(fnn.MLP((2, 3), (act,))) == 3 * 2 + 1 * 3, act
    assert cost_model.pass_macs(fnn.MLP((2, 3), ("identity",))) == 3 * 2
    # Two layers: Σᵢ (nᵢ nᵢ₋₁ + cᵢ nᵢ) = (4·2 + 2·4) + (3·4 + 1·3).
    two = fnn.MLP((2, 4, 3), ("softmax", "tanh"))
    assert cost_model.pass_macs(two) == (8 + 8) + (12 + 3)
    assert cost_model.jacobian_macs(two, "reverse") == (8 + 12) + 3 * 31
