"""tests/allpairs.py: the pairwise grids the other tests use cover what they claim."""
import itertools

import pytest

from allpairs import allpairs, pairwise_params

GRIDS = [
    # (factors, full): the shapes of the grids in test_forward / test_backward / test_aliasing
    ([range(10), range(4), range(2), range(2), range(3)], (1, 2, 3, 4)),
    ([range(22), range(4), range(2), range(2)], (1, 2, 3)),
    ([range(3), range(4), range(2), range(2)], (1, 2, 3)),
    ([range(5), range(3), range(7), range(2), range(1)], ()),
    ([range(1)], ()),
]


@pytest.mark.parametrize("factors,full", GRIDS)
def test_every_pair_and_every_full_combination_occurs(factors, full):
    rows = allpairs(factors, full)
    for i, j in itertools.combinations(range(len(factors)), 2):
        seen = {(r[i], r[j]) for r in rows}
        missing = set(itertools.product(factors[i], factors[j])) - seen
        assert not missing, f"factors {i}, {j}: pairs {sorted(missing)[:5]} missing"
    seen = {tuple(r[f] for f in full) for r in rows}
    assert seen == set(itertools.product(*(factors[f] for f in full)))
    assert all(len(r) == len(factors) for r in rows)


def test_rows_are_few_and_deterministic():
    factors = dict(shape=range(10), dtype="abcd", layout="xy", stats="sb", affine="ncg")
    rows = allpairs(factors, full=("dtype", "layout", "stats", "affine"))
    assert len(rows) == 48, "the full combinations alone should leave no pair uncovered"
    assert rows == allpairs(factors, full=("dtype", "layout", "stats", "affine"))
    assert len(allpairs(factors)) < 10 * 4 * 2 * 2 * 3 // 10


def test_params_spread_multi_value_params_and_name_them():
    params = pairwise_params(dict(case=[pytest.param((2, 3), 1, id="small")], flag=[True]))
    assert len(params) == 1
    assert params[0].values == ((2, 3), 1, True)
    assert params[0].id == "small-True"


def test_empty_factor_is_refused():
    with pytest.raises(ValueError, match="no values"):
        allpairs(dict(a=[1], b=[]))
