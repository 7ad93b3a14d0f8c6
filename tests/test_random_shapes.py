"""Random shapes (hypothesis, derandomized): forward and backward against the reference."""
import pytest

import gn_native as gn
import reference as ref
from conftest import (AFFINES, LAYOUTS, STATS, assert_close, assert_grads_close,
                      assert_stats_close, channel_axis, dtype_params, make_affine, make_data,
                      physical_shape)

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@st.composite
def _random_case(draw):
    g = draw(st.integers(1, 5))
    k = draw(st.integers(1, 9))
    spatial = tuple(draw(st.lists(st.integers(1, 6), min_size=0, max_size=3)))
    shape = (draw(st.integers(1, 3)), g * k) + spatial
    return (shape, g, draw(st.sampled_from([d.values[0] for d in dtype_params()])),
            draw(st.sampled_from(LAYOUTS)), draw(st.sampled_from(STATS)),
            draw(st.sampled_from(AFFINES)), draw(st.integers(0, 2 ** 16)))


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True, database=None)
@hypothesis.given(_random_case())
def test_random_shapes_match_reference(case):
    shape, g, dtype, layout, stats, affine, seed = case
    x = make_data(physical_shape(shape, layout), dtype, seed)
    gamma, beta = make_affine(affine, shape[1], g, dtype, seed)
    ax = channel_axis(layout)
    y, m, r = gn.group_norm_forward(x, g, gamma, beta, stats=stats, channel_axis=ax)
    y_ref, m_ref, r_ref = ref.forward(x, g, gamma, beta, stats=stats, channel_axis=ax)
    assert_close(y, y_ref, dtype)
    assert_stats_close(m, r, m_ref, r_ref, dtype)
    dy = make_data(x.shape, dtype, seed + 1)
    got = gn.group_norm_backward(dy, x, m, r, g, gamma, stats=stats, channel_axis=ax)
    assert_grads_close(got, dy, x, m, r, g, gamma, stats, ax)
