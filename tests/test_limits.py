"""The machine's limits kept between runs (profile/limits.py), and the study's thread counts timed only where they
can win (throughput.measure's prune_threads)."""
import json

import pytest

from minigrad.profile import limits as L
from minigrad.profile import throughput


@pytest.fixture
def fake_measure(tmp_path, monkeypatch):
    """Limits kept in a folder of the test's own; each measurement returns the next figures of `values`."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MINIGRAD_MACHINE_LIMITS", raising=False)
    calls = []

    def measure(threads, dtypes, ceiling_n, bandwidths=True):
        g = fake_measure.values[len(calls)]
        calls.append(threads)
        fake_measure.bandwidths.append(bandwidths)
        return {"ceilings": {d: g for d in dtypes}, "bandwidth": g / 10 if bandwidths else None,
                "cache_bandwidth": g / 2 if bandwidths else None, "measured_at": f"2026-12-04T00:00:0{len(calls)}"}

    fake_measure.values = [100.0, 80.0, 120.0]
    fake_measure.bandwidths = []
    monkeypatch.setattr(L, "measure", measure)
    fake_measure.calls = calls
    return fake_measure


def test_a_study_takes_the_kept_limits_and_profiling_measures_anew(fake_measure):
    first = L.limits(1, ["float32"], kept=True)  # nothing kept yet: the ceiling alone is measured, and kept
    assert first["source"] == "measured" and first["ceilings"] == {"float32": 100.0}
    assert first["bandwidth"] is None and fake_measure.bandwidths == [False]
    again = L.limits(1, ["float32"], kept=True)
    assert again["source"] == "kept" and again["ceilings"] == {"float32": 100.0} and len(fake_measure.calls) == 1
    assert again["bandwidth"] is None
    # a fresh measurement that came out lower (a busy core) does not lower the kept limit; a higher one raises it
    assert L.limits(1, ["float32"])["ceilings"] == {"float32": 80.0}
    assert L.limits(1, ["float32"], kept=True)["ceilings"] == {"float32": 100.0}
    L.limits(1, ["float32"])
    kept = L.limits(1, ["float32"], kept=True)
    assert kept["ceilings"] == {"float32": 120.0} and kept["bandwidth"] == 12.0  # the larger of 8 and 12
    assert len(fake_measure.calls) == 3 and fake_measure.bandwidths == [False, True, True]


def test_each_thread_count_and_dtype_is_kept_apart(fake_measure):
    L.limits(1, ["float32"], kept=True)
    assert L.limits(2, ["float32"], kept=True)["source"] == "measured"  # another thread count: its own entry
    assert L.limits(1, ["float32", "float64"], kept=True)["source"] == "measured"  # a dtype it lacks
    assert fake_measure.calls == [1, 2, 1]


@pytest.mark.parametrize("spoil", ["corrupt", "other key", "negative", "off"])
def test_a_spoilt_file_or_keeping_off_means_measuring(fake_measure, monkeypatch, spoil):
    L.limits(1, ["float32"], kept=True)
    path = L.cache_file()
    data = json.loads(open(path).read())
    if spoil == "corrupt":
        open(path, "w").write("{not json")
    elif spoil == "other key":
        data["key"] = dict(data["key"], cpu="another CPU")
        open(path, "w").write(json.dumps(data))
    elif spoil == "negative":
        data["limits"][L.entry(1, 2048)]["bandwidth"] = -1.0
        open(path, "w").write(json.dumps(data))
    else:
        monkeypatch.setenv("MINIGRAD_MACHINE_LIMITS", "off")
    assert L.limits(1, ["float32"], kept=True)["source"] == "measured"
    # the control: an untouched file is taken
    monkeypatch.delenv("MINIGRAD_MACHINE_LIMITS", raising=False)
    assert L.limits(1, ["float32"], kept=True)["source"] == "kept"


def test_the_real_measurement_is_kept_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    measured = L.limits(1, ["float32"], ceiling_n=256)
    assert measured["source"] == "measured"
    assert measured["ceilings"]["float32"] > 0 and measured["bandwidth"] > 0 and measured["cache_bandwidth"] > 0
    kept = L.limits(1, ["float32"], ceiling_n=256, kept=True)
    assert kept["source"] == "kept" and kept["ceilings"] == measured["ceilings"]


def _fake_steps(monkeypatch, faster_from):
    """Step times where two threads beat one only at B >= faster_from[path] (the time is B us on one thread)."""
    import numba

    def time_step(model, opt, X, y, *args, **kwargs):
        B, T = X.shape[0], numba.get_num_threads()
        path = model.step_path(B, opt)
        seconds = B * 1e-6 * (0.7 if T > 1 and B >= faster_from.get(path, 10**9) else 1.05 if T > 1 else 1.0)
        return dict(step_time_s=seconds, iqr_s=0.0, repeats=10, first_call_s=seconds, timed="call", rounds_s="",
                    round_spread=0.0, remeasured=0, busy=0, busy_reason="")

    monkeypatch.setattr(throughput, "_time_step", time_step)
    monkeypatch.setattr(throughput, "_memory", lambda *args: {})  # no step runs: nothing to compile


@pytest.mark.parametrize("prune", [True, False])
def test_more_threads_are_timed_down_to_where_they_stop_winning(monkeypatch, prune):
    _fake_steps(monkeypatch, {"blas-fused-sgd": 64})
    sizes = [8, 16, 16, 3]
    Bs = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    result = throughput.measure(sizes, Bs, threads=[1, 2], kept_limits=True, prune_threads=prune)
    two = sorted(r["batch_size"] for r in result["rows"] if r["threads"] == 2)
    if prune:  # timed at 256, 128, 64 (faster), then 32 (not faster): stop
        assert two == [32, 64, 128, 256] and result["pruned"] == {2: [1, 2, 4, 8, 16]}
    else:  # the control: every B timed on both counts
        assert two == Bs and result["pruned"] == {}
    assert sorted(r["batch_size"] for r in result["rows"] if r["threads"] == 1) == Bs


def test_the_walk_down_starts_again_where_the_path_changes(monkeypatch):
    from minigrad.engine import steps

    if steps.fused_workers(2) < 2:
        pytest.skip("the fused parallel step needs Numba's OpenMP threading layer")
    # 784-256-256-10 (270k parameters): at B <= 32 two threads take the fused parallel step, above it BLAS's step
    _fake_steps(monkeypatch, {"blas-fused-sgd": 10**9, "fused-sgd-parallel": 1})
    Bs = [4, 8, 16, 32, 64, 128]
    result = throughput.measure([784, 256, 256, 10], Bs, threads=[1, 2], kept_limits=True, prune_threads=True)
    two = {r["batch_size"]: r["path"] for r in result["rows"] if r["threads"] == 2}
    # 128 loses: 64 (same path) is not timed; 32 is another path, so timing resumes and two threads win down to 4
    assert two == {128: "blas-fused-sgd", 32: "fused-sgd-parallel", 16: "fused-sgd-parallel",
                   8: "fused-sgd-parallel", 4: "fused-sgd-parallel"}
    assert result["pruned"] == {2: [64]}



def test_rows_without_measured_bandwidths_have_no_roof_and_say_so():
    from minigrad.profile import roofline

    known = roofline.step_roof([8, 16, 3], 4, 4, 1e6, 1e-5, 100.0, 10.0, 50.0, 1)
    unknown = roofline.step_roof([8, 16, 3], 4, 4, 1e6, 1e-5, 100.0, None, None, 1)
    assert known["roof"] in ("memory", "GEMM") and known["pct_of_roof"] > 0  # the control
    assert unknown["roof"] == "" and unknown["pct_of_roof"] != unknown["pct_of_roof"]  # NaN
    assert unknown["gemm_floor_s"] == known["gemm_floor_s"]
