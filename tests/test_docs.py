"""The public API's docstrings: numpydoc sections present, and every Examples section
runs and prints what it shows (doctest, as numpy's refguide check does)."""
import doctest
import inspect

import numpy as np
import pytest

import gn_native as gn

PUBLIC = [n for n in gn.__all__ if n != "__version__"]
METHODS = [n for n, f in inspect.getmembers(gn.GroupNorm, inspect.isfunction)
           if not n.startswith("_") and f.__doc__]


def _objects():
    out = [(n, getattr(gn, n)) for n in PUBLIC]
    out += [(f"stages.{n}", getattr(gn.stages, n)) for n in gn.stages.__all__
            if callable(getattr(gn.stages, n))]
    return out + [(f"GroupNorm.{n}", getattr(gn.GroupNorm, n)) for n in METHODS]


@pytest.mark.parametrize("name,obj", _objects(), ids=[n for n, _ in _objects()])
def test_numpydoc_sections(name, obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    has_params = bool(inspect.signature(obj).parameters.keys() - {"self"}) if callable(obj) else False
    wanted = (["Parameters"] if has_params else []) + ["Examples"]
    if name in ("group_norm", "group_norm_forward", "group_norm_backward", "GroupNorm"):
        wanted += ["Returns" if name != "GroupNorm" else "Attributes", "Raises", "See Also"]
    for section in wanted:
        assert f"\n{section}\n" + "-" * len(section) in doc, f"{name}: no {section} section"
    if has_params and not isinstance(obj, type):
        params = set(inspect.signature(obj).parameters) - {"self"}
        documented = doc.split("\nParameters\n")[1].split("\n\n")[0]
        for p in params:
            assert p in documented or any(p in line.split(":")[0]
                                          for line in doc.splitlines() if " : " in line), (
                f"{name}: parameter {p} is not documented")


@pytest.mark.parametrize("name,obj", _objects(), ids=[n for n, _ in _objects()])
def test_examples_run(name, obj):
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(obj, name, globs={"np": np, "gn": gn})
    assert any(t.examples for t in tests), f"{name}: no examples"
    old = gn.get_num_threads()
    try:
        for t in tests:
            runner.run(t)
    finally:
        gn.set_num_threads(old)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, f"{name}: {res.failed} of {res.attempted} examples failed (see above)"
