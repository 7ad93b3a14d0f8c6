"""All-pairs (pairwise) test grids: a few rows in place of a full Cartesian product.

allpairs(factors, full=...) returns rows (tuples, one value per factor) in
which every pair of values of any two factors occurs in at least one row,
and every combination of the factors named in `full` occurs as a whole (the
kernel selectors: the core compiles one function per dtype, layout and
statistics mode, so those combinations are kept complete).  The rows are
built greedily and deterministically: the same factors give the same rows
on every run and machine.  pairwise_params() wraps them as pytest.param's
for @pytest.mark.parametrize.

Standard library only; tests/test_allpairs.py checks the coverage claims.
"""
import itertools

import pytest


def _unpack(value):
    """(values tuple, id or None) of a factor value; a pytest.param may hold several values."""
    if isinstance(value, type(pytest.param(None))):
        return tuple(value.values), value.id
    return (value,), None


def allpairs(factors, full=()):
    """Rows of indices-resolved values covering every pair of values of any two factors.

    factors: a dict name -> list of values (or a list of such lists, named by position).
    full: names (or positions) of factors whose every combination must occur in a row.
    Returns a list of tuples, one value per factor, in factor order.
    """
    if isinstance(factors, dict):
        names, levels = list(factors), [list(v) for v in factors.values()]
    else:
        names, levels = list(range(len(factors))), [list(v) for v in factors]
    for name, vals in zip(names, levels):
        if not vals:
            raise ValueError(f"factor {name!r} has no values")
    full_idx = [names.index(f) for f in full]
    nf = len(levels)
    uncovered = {(i, a, j, b) for i, j in itertools.combinations(range(nf), 2)
                 for a in range(len(levels[i])) for b in range(len(levels[j]))}
    used = [[0] * len(vals) for vals in levels]   # how often each value was placed (ties)
    rows = []

    def gain(row, f, v):
        n = 0
        for g, w in enumerate(row):
            if w is not None and g != f:
                key = (g, w, f, v) if g < f else (f, v, g, w)
                n += key in uncovered
        return n

    def complete(row):
        for f in range(nf):
            if row[f] is None:
                # the value covering most new pairs with the values placed so far, then the
                # least used one, then the first
                row[f] = max(range(len(levels[f])),
                             key=lambda v: (gain(row, f, v), -used[f][v], -v))
        for i, j in itertools.combinations(range(nf), 2):
            uncovered.discard((i, row[i], j, row[j]))
        for f, v in enumerate(row):
            used[f][v] += 1
        rows.append(tuple(row))

    for combo in itertools.product(*(range(len(levels[f])) for f in full_idx)):
        row = [None] * nf
        for f, v in zip(full_idx, combo):
            row[f] = v
        complete(row)
    while uncovered:
        i, a, j, b = min(uncovered)
        row = [None] * nf
        row[i], row[j] = a, b
        complete(row)
    return [tuple(levels[f][v] for f, v in enumerate(r)) for r in rows]


def pairwise_params(factors, full=()):
    """allpairs() as a list of pytest.param for parametrize("name1,name2,...", ...).

    A factor value may be a pytest.param of several values (e.g. pytest.param(shape, g,
    id="odd")): its values are spread into the row and its id names it.
    """
    out = []
    for row in allpairs(factors, full):
        values, ids = [], []
        for v in row:
            vals, vid = _unpack(v)
            values += vals
            ids.append(vid if vid is not None else "-".join(_id(x) for x in vals))
        out.append(pytest.param(*values, id="-".join(ids)))
    return out


def _id(x):
    name = getattr(x, "name", None)      # numpy dtypes
    return name if isinstance(name, str) else str(x)
