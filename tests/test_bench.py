"""The benchmark runs, checks its results with the suite's reference and tolerances,
and reports; no timing is asserted."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _load(name):
    """A bench module by path (targets, measure and report import nothing else of bench/)."""
    spec = importlib.util.spec_from_file_location(f"gn_bench_{name}",
                                                  os.path.join(BENCH, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(case, layout="nchw", ps="forward", threads=1, dtype="float32", stats="sample",
         ms=1.0, x_floor=1.0, x_torch=0.4, nbytes=8 << 20, act="none", x_plain=None):
    return {"case": case, "dtype": dtype, "layout": layout, "stats": stats, "activation": act,
            "pass": ps, "threads": threads, "status": "ok", "ms": ms, "x_floor": x_floor,
            "x_torch": x_torch, "x_plain": x_plain, "bytes": nbytes, "gbps": 1.0}


def test_targets_report_the_worst_row():
    t = _load("targets")
    rows = [_row("a", x_floor=1.2), _row("b", x_floor=1.5),
            _row("a", layout="nhwc", ms=1.1), _row("b", layout="nhwc", ms=3.0),
            _row("tiny", x_floor=9.0, nbytes=1 << 16)]   # under 1 MiB: not a floor target
    res = {text: worst for text, _, worst in t.checks(rows)}
    fwd1 = next(w for k, w in res.items() if k.startswith("forward x floor <= 1.3"))
    assert fwd1 == (1.5, "b forward t=1")
    nhwc = next(w for k, w in res.items() if k.startswith("NHWC"))
    assert nhwc[0] == pytest.approx(3.0) and nhwc[1].startswith("b ")
    text = "\n".join(t.lines(rows))
    assert "NOT met" in text and ": met" in text


def test_targets_of_fused_silu():
    """Issue 13's targets: x plain <= 1.15 forward / 1.2 backward and x torch <= 0.4, both
    layouts, cases of 1 MiB or more; only in runs with SiLU rows, which the plain targets
    ignore; rows saved before --activation count as plain."""
    t = _load("targets")
    plain = [_row("a"), _row("a", ps="backward"), _row("a", layout="nhwc")]
    assert not any("SiLU" in text for text, _, _ in t.checks(plain))
    silu = [_row("a", act="silu", x_plain=1.1, x_floor=50.0, x_torch=0.3),
            _row("a", layout="nhwc", threads=2, act="silu", x_plain=1.3, x_torch=0.45),
            _row("a", ps="backward", act="silu", x_plain=1.19, x_torch=0.2),
            _row("tiny", act="silu", x_plain=9.0, x_torch=9.0, nbytes=1 << 16)]
    old = [{k: v for k, v in r.items() if k != "activation"} for r in plain]
    res = {text: (lim, worst) for text, lim, worst in t.checks(old + silu)}
    fwd = next(v for k, v in res.items() if k.startswith("GN+SiLU forward time"))
    assert fwd == (1.15, (1.3, "a forward t=2 nhwc"))
    assert next(v for k, v in res.items() if k.startswith("GN+SiLU forward >= 2.5x")) == (
        0.4, (0.45, "a forward t=2 nhwc"))
    bwd = next(v for k, v in res.items() if k.startswith("GN+SiLU backward time"))
    assert bwd == (1.2, (1.19, "a backward t=1 nchw"))
    fwd1 = next(v for k, v in res.items() if k.startswith("forward x floor <= 1.3"))
    assert fwd1[1] == (1.0, "a forward t=1")          # the SiLU row's 50x floor is not GN's
    text = "\n".join(t.lines(old + silu))
    assert "GN+SiLU backward time <= 1.2x" in text and text.count("NOT met") == 2
    docs = [{"rows": silu[:1]}, {"rows": [dict(silu[0], x_plain=v) for v in (1.0, 1.5)]}]
    assert [r["x_plain"] for r in t.pooled(docs)] == [pytest.approx(1.1)]


def test_activation_rows_show_x_plain():
    rep = _load("report")
    r = _row("a", act="silu", x_plain=1.07)
    head = rep.header_lines({"date": "d", "gn_native": "v", "gn_native_path": "p",
                             "show_config": "", "python": "3", "numpy": "2", "torch": None,
                             "cpu": "c", "cores": 2, "threads": [1], "gpu": "no",
                             "timing": {"budget_s": 0.1, "reps": (3, 30)}}, False, True)
    assert head[-2].split()[-1] == "plain" and " fused " in head[-2]
    line = rep.format_row(r, False, True)
    assert " silu " in line and line.split()[-1] == "1.07" and len(line) <= len(head[-2])
    assert "x plain" not in rep.format_row(r, False) and "silu" not in rep.format_row(r, False)
    summary = "\n".join(rep.summary_lines([r], False, True))
    assert "x plain" in summary and summary.rstrip().endswith("1.07")


def test_targets_pool_runs_by_median():
    t = _load("targets")
    docs = [{"rows": [_row("a", x_floor=v)]} for v in (1.0, 3.0, 1.2)]
    rows = t.pooled(docs)
    assert len(rows) == 1 and rows[0]["x_floor"] == pytest.approx(1.2) and rows[0]["runs"] == 3


def test_a_busy_machine_gives_one_warning():
    """Rows run under load are marked ~, and the run ends with one warning, no verdicts."""
    rep = _load("report")
    rows = [dict(_row("a"), others_cores=1.5), dict(_row("b"), others_cores=0.0)]
    assert rep.format_row(rows[0], False).endswith("~")
    assert not rep.format_row(rows[1], False).endswith("~")
    text = " ".join(" ".join(rep.noise_lines(rows)).split())  # unwrapped
    assert text.count("warning") == 1 and "1 of 2 rows" in text and "NOT met" not in text
    assert rep.noise_lines(rows[1:]) == []


def test_bench_uses_the_suites_tolerances():
    """One policy: an output half the suite's float32 tolerance off passes, ten off fails."""
    m = _load("measure")
    import reference
    assert os.path.samefile(m.ref.__file__, reference.__file__)
    rng = np.random.default_rng(0)
    data = {k: rng.standard_normal(s).astype(np.float32)
            for k, s in (("x", (2, 8, 4, 4)), ("dy", (2, 8, 4, 4)), ("gamma", 8), ("beta", 8))}
    want = m.references(data, 4, "sample", ("forward",))["none", "none"]["forward"]
    y, mean = want["y"][0], want["mean"][0]
    tol = reference.tolerance(y, np.float32, "forward")
    assert m.compare({"y": (y + 0.5 * tol).astype(np.float32), "mean": mean}, want) == []
    errors = m.compare({"y": (y + 10 * tol).astype(np.float32), "mean": mean}, want)
    assert len(errors) == 1 and errors[0].startswith("y: ")


def test_bench_uses_the_activation_tolerances():
    """With an activation, test_activation.py's policy: y may be off by |act'(z)| times z's
    tolerance plus y's own; gradients from dy * act'(z) (reference.act_grad_in)."""
    m = _load("measure")
    import reference as ref
    rng = np.random.default_rng(1)
    data = {k: rng.standard_normal(s).astype(np.float32)
            for k, s in (("x", (2, 8, 4, 4)), ("dy", (2, 8, 4, 4)), ("gamma", 8), ("beta", 8))}
    x, dy, gamma, beta = data["x"], data["dy"], data["gamma"], data["beta"]
    refs = m.references(data, 4, "sample", ("forward", "backward"), ["silu"])
    assert set(refs) == {("none", "none"), ("silu", "none")}  # the plain call beside is checked too
    y_ref, z_ref, mean, rstd = ref.forward_act(x, 4, gamma, beta, m.EPS, "sample", 1, "silu")
    y, tol = refs["silu", "none"]["forward"]["y"]
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(tol, np.abs(ref.activation(z_ref, "silu")[1])
                                  * ref.tolerance(z_ref, np.float32) + ref.tolerance(y_ref,
                                                                                     np.float32))
    gin = ref.act_grad_in(dy, x, mean, rstd, 4, gamma, beta, "sample", 1, "silu")
    for want, (got, _) in zip(ref.backward(gin, x, mean, rstd, 4, gamma, "sample"),
                              refs["silu", "none"]["backward"].values()):
        np.testing.assert_array_equal(got, want)
    want = refs["silu", "none"]["forward"]
    assert m.compare({"y": (y + 0.5 * tol).astype(np.float32)}, want) == []
    assert m.compare({"y": (y + 10 * tol).astype(np.float32)}, want)[0].startswith("y: ")


def test_bench_quick_run_with_activation(tmp_path):
    """--activation none,silu: every row checked (the fused call and the plain one beside
    it), an act and an x plain column, x plain in the JSON, torch's silu(group_norm)."""
    out = tmp_path / "a.json"
    cmd = [sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--cases", "4x16x12x12/4",
           "--dtype", "float32", "--threads", "1", "--activation", "none,silu", "--no-gpu",
           "--no-overhead", "--budget", "0.01", "--json", str(out), "--plot", "none"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "x plain" in p.stdout and " silu " in p.stdout
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 2 * 2 * 2                   # layouts x stats x activations x passes
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"][:2]
    for r in rows:
        assert (r["x_plain"] is None) == (r["activation"] == "none"), r
        assert r["x_plain"] is None or r["x_plain"] > 0 and r["ms_plain"] > 0
        assert (r["x_torch"] is not None) == (_has("torch") and r["stats"] == "sample"), r
    t = subprocess.run([sys.executable, os.path.join(BENCH, "targets.py"), str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert t.returncode == 0 and "GN+SiLU forward" in t.stdout, t.stderr


def test_bench_add_rows(tmp_path):
    """--add full,nc: forward rows only, checked against the reference on x + add (and the
    sum written for a full add, bit for bit), x plain against GN alone, the add target."""
    m = _load("measure")
    rng = np.random.default_rng(2)
    data = {k: rng.standard_normal(s).astype(np.float32) for k, s in (
        ("x", (2, 8, 4, 4)), ("dy", (2, 8, 4, 4)), ("gamma", 8), ("beta", 8),
        ("add_full", (2, 8, 4, 4)), ("add_nc", (2, 8)))}
    refs = m.references(data, 4, "sample", ("forward", "backward"), ["silu"], ["full", "nc"])
    assert set(refs) == {(a, d) for a in ("none", "silu") for d in ("none", "full", "nc")}
    assert "backward" not in refs["none", "full"] and "backward" in refs["none", "none"]
    s, tol = refs["silu", "full"]["forward"]["sum"]
    np.testing.assert_array_equal(s, data["x"] + data["add_full"])
    assert not tol.any()
    out = tmp_path / "a.json"
    cmd = [sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--cases", "4x16x12x12/4",
           "--dtype", "float32", "--threads", "1", "--add", "none,full,nc", "--no-gpu",
           "--layout", "nhwc", "--no-overhead", "--budget", "0.01", "--json", str(out),
           "--plot", "none"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert " +full " in p.stdout and " +nc " in p.stdout
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * (3 + 1)        # stats x (forward with 3 adds, backward without)
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"][:2]
    assert {r["add"] for r in rows if r["pass"] == "backward"} == {"none"}
    for r in rows:
        assert (r["x_plain"] is None) == (r["add"] == "none"), r
    t = subprocess.run([sys.executable, os.path.join(BENCH, "targets.py"), str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert t.returncode == 0 and "GN with add=" in t.stdout, t.stderr


def test_bench_quick_run(tmp_path):
    """A short run: every row checked against the float64 reference, JSON written,
    no speed verdicts in the demo; exit status 0 (1 would mean a wrong result)."""
    pytest.importorskip("ml_dtypes")
    out = tmp_path / "b.json"
    cmd = [sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--cases", "tiny,4x16x12x12/4",
           "--dtype", "float32,bfloat16", "--threads", "1", "--no-torch", "--no-gpu",
           "--budget", "0.01", "--json", str(out), "--plot", str(tmp_path / "b.png")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Summary" in p.stdout and "Call overhead" in p.stdout
    assert "NOT met" not in p.stdout and "Targets" not in p.stdout
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == 2 * 2 * 2 * 2 * 2          # cases x dtypes x layouts x stats x passes
    assert all(r["status"] == "ok" for r in doc["rows"]), [r for r in doc["rows"]
                                                          if r["status"] != "ok"][:2]
    assert doc["overhead"] and doc["overhead"][0]["call_s"] > 0
    assert not _has("matplotlib") or (tmp_path / "b.png").stat().st_size > 0
    t = subprocess.run([sys.executable, os.path.join(BENCH, "targets.py"), str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert t.returncode == 0 and "Targets, medians over 1 run(s)" in t.stdout, t.stderr


def _has(name):
    return importlib.util.find_spec(name) is not None
