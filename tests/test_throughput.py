"""minigrad.profile.throughput: consistent rows, JSON round trip, one-line errors, and the `bench throughput` command.

Tiny models and few batch sizes: these check the bookkeeping, never a speed (benchmarks live in bench/).
"""
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from minigrad import MLP
from minigrad.machine import timing
from minigrad.profile import report as profile_report
from minigrad.profile import roofline, throughput
from minigrad.cli import main

SIZES, BATCH_SIZES = [8, 8, 2], [1, 4]


@pytest.fixture(scope="module")
def result():
    # one thread: the serial paths are cached on disk, so the test does not wait for a parallel compile
    return throughput.measure(SIZES, BATCH_SIZES, backends="all", threads=[1], repeats=3, ceiling_n=64)


def test_one_row_per_backend_and_batch_size(result):
    rows = result["rows"]
    assert [(r["backend"], r["batch_size"]) for r in rows] == [
        (b, B) for b in throughput.BACKEND_NAMES for B in BATCH_SIZES]
    assert all(r["threads"] == 1 and r["dtype"] == "float32" and r["repeats"] == 3 for r in rows)


def test_rows_are_consistent(result):
    model = MLP(SIZES)
    assert result["ceiling_gflops"] > 0 and result["ceilings"] == {1: result["ceiling_gflops"]}
    for r in result["rows"]:
        B, t = r["batch_size"], r["step_time_s"]
        assert t > 0 and r["iqr_s"] >= 0 and r["first_call_s"] > 0
        assert r["samples_per_s"] == pytest.approx(B / t)
        assert r["gflops"] == pytest.approx(model.flops_per_step(B) / t / 1e9)
        assert r["ceiling_gflops"] == result["ceiling_gflops"]
        assert r["pct_of_ceiling"] == pytest.approx(100 * r["gflops"] / r["ceiling_gflops"])
        assert all(isinstance(v, (int, float, str)) for v in r.values())  # flat: the HDF5 store takes it as is
        traffic, _ = roofline.step_traffic(SIZES, B, 4)
        assert r["traffic_bytes"] == traffic
        assert r["pct_of_memory_floor"] == pytest.approx(100 * r["memory_floor_s"] / t)
        assert r["memory_floor_s"] == pytest.approx(traffic / (r["floor_bandwidth_gbs"] * 1e9))
        assert r["pct_of_roof"] == pytest.approx(max(r["pct_of_memory_floor"], r["pct_of_ceiling"]))
        assert r["roof"] == ("memory" if r["memory_floor_s"] >= r["gemm_floor_s"] else "GEMM")
    assert set(result["compile_s"]) == {f"{b}/1/float32" for b in throughput.BACKEND_NAMES}


def test_step_traffic_counts_parameters_three_times_and_the_rest_once_each_way():
    sizes, B = [784, 256, 256, 10], 1
    P = 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    traffic, live = roofline.step_traffic(sizes, B, 4)
    assert traffic == 3 * P * 4 + (784 * 4 + 8) + 4 * 522 * 4
    assert live == P * 4 + (784 * 4 + 8) + 2 * 522 * 4


def test_the_roof_that_applies_is_memory_at_small_batches_and_gemm_at_large_ones():
    sizes, model = [784, 256, 256, 10], MLP([784, 256, 256, 10])
    common = dict(itemsize=4, ceiling_gflops=200.0, dram_gbs=20.0, l2_gbs=200.0, threads=2, l2_size=2 << 20)
    small = roofline.step_roof(sizes, 1, flops=model.flops_per_step(1), step_s=20e-6, **common)
    assert small["roof"] == "memory" and small["memory_level"] == "L2"
    assert small["memory_floor_s"] == pytest.approx(small["traffic_bytes"] / 200e9)
    assert small["pct_of_roof"] == pytest.approx(100 * small["memory_floor_s"] / 20e-6)
    large = roofline.step_roof(sizes, 4096, flops=model.flops_per_step(4096), step_s=30e-3, **common)
    assert large["roof"] == "GEMM" and large["memory_level"] == "DRAM"  # 4096 rows of activations leave L2
    assert large["pct_of_roof"] == pytest.approx(100 * model.flops_per_step(4096) / 200e9 / 30e-3)
    # negative control: with caches too small for the weights, even B = 1 streams from DRAM
    assert roofline.step_roof(sizes, 1, flops=1, step_s=1.0, **dict(common, l2_size=1 << 16))["memory_level"] == "DRAM"


def test_thread_settings_in_effect_are_recorded(result):
    settings = result["thread_settings"][1]
    assert settings["numba"] == 1
    # every loaded BLAS and OpenMP pool, scipy's OpenBLAS (the one Numba calls) included, ran on one thread
    assert settings["blas"] and set(settings["blas"].values()) == {1}
    assert any("scipy_openblas" in lib and "64_" not in lib for lib in settings["blas"])


SCIPY_BLAS_THREADS = """
import numpy as np
from numba import njit
from threadpoolctl import threadpool_info
{limit}

@njit
def gemm(a, b, c):
    np.dot(a, b, c)

a = np.ones((4, 4))
gemm(a, a, a.copy())  # Numba loads scipy's OpenBLAS here, at the first np.dot it compiles
print([i["num_threads"] for i in threadpool_info() if "scipy_openblas" in i["filepath"] and "64_" not in i["filepath"]])
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to tell 1 thread from the default")
def test_limit_threads_reaches_the_blas_numba_loads_later():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}

    def threads(limit):
        proc = subprocess.run([sys.executable, "-c", SCIPY_BLAS_THREADS.format(limit=limit)], capture_output=True,
                              text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().splitlines()[-1]

    assert threads("from minigrad.machine.threads import limit_threads; limits = limit_threads(1)") == "[1]"
    # negative control: the same limit set with threadpoolctl alone, before the library is loaded, misses it
    assert threads("from threadpoolctl import threadpool_limits; limits = threadpool_limits(1)") != "[1]"


def test_environment_names_blas_and_numba(result):
    env = result["env"]
    assert env["numba_num_threads"] >= 1 and env["numpy"] == np.__version__
    assert any(b["user_api"] == "blas" for b in env["blas"])


def test_json_round_trip(result, tmp_path):
    path = tmp_path / "speed.json"
    profile_report.write_json(result, path)
    back = json.loads(path.read_text())
    assert back["rows"] == result["rows"]
    assert back["ceiling_gflops"] == result["ceiling_gflops"]
    assert back["config"]["sizes"] == SIZES
    assert [p.name for p in tmp_path.iterdir()] == ["speed.json"]  # no temporary file left behind


def test_print_result_plain_text(result):
    out = io.StringIO()
    profile_report.print_result(result, file=out)
    text = out.getvalue()
    assert "median time of one training step [1 thread(s), float32]" in text and "GEMM ceiling" in text
    header = next(line for line in text.splitlines() if line.startswith("B "))
    assert header.split()[4::3][:5] == list(throughput.BACKEND_NAMES)  # after B, least traffic, roof


def test_adaptive_repeats_take_at_least_the_minimum():
    samples = timing.time_calls(lambda: None, min_time=0.0, min_repeats=5)
    assert len(samples) == 5
    assert len(timing.time_calls(lambda: None, repeats=2)) == 2
    median, iqr = timing.median_iqr([1.0, 2.0, 3.0, 4.0, 5.0])
    assert median == 3.0 and iqr == 2.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(sizes=[8, 2], batch_sizes=[0, 4]), "batch sizes must be >= 1"),
    (dict(sizes=[8, 2], batch_sizes=[]), "no batch sizes"),
    (dict(sizes=[], batch_sizes=[1]), "at least 2 positive"),
    (dict(sizes=[8, 0, 2], batch_sizes=[1]), "at least 2 positive"),
    (dict(sizes=[8, 2], batch_sizes=[1], backends="gpu"), "unknown backend 'gpu'"),
    (dict(sizes=[8, 2], batch_sizes=[1], threads=[0]), "threads must lie between 1 and"),
    (dict(sizes=[8, 2], batch_sizes=[1], threads=[10_000]), "threads must lie between 1 and"),
    (dict(sizes=[8, 2], batch_sizes=[1], dtypes="int8"), "float32 or float64"),
    (dict(sizes=[8, 2], batch_sizes=[1], optimizer="lbfgs"), "unknown optimizer"),
    (dict(sizes=[8, 2], batch_sizes=[1], repeats=0), r"repeats must be an integer in \[1, "),
    (dict(sizes=[8, 2], batch_sizes=[1], dtypes=[]), "no dtype given"),
    (dict(sizes=[8, 2], batch_sizes=[1], breakdown=[0]), "breakdown batch sizes must be >= 1"),
    (dict(sizes=[8, 2], batch_sizes=[1], compare="tensorflow"), "unknown framework 'tensorflow'"),
])
def test_bad_input_is_a_one_line_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        throughput.measure(**kwargs)
    assert "\n" not in str(info.value)


def test_cli_writes_json(tmp_path):
    path = tmp_path / "x.json"
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "throughput", "--sizes", "8,8,2", "--batch-sizes", "1,4", "--threads",
                                  "1", "--repeats", "3", "--json", str(path)])
    assert result.exit_code == 0, result.output
    rows = json.loads(path.read_text())["rows"]
    assert [r["batch_size"] for r in rows] == [1, 4]
    assert all(math.isfinite(r["samples_per_s"]) for r in rows)
    assert "median step" in result.output and f"wrote {path}" in result.output
    assert {r["timed"] for r in rows} == {"call"} and "compiled training loop" not in result.output
    # --in-loop: the same steps timed in chunks of the compiled loop, and the output says so
    result = runner.invoke(main, ["bench", "throughput", "--sizes", "8,8,2", "--batch-sizes", "1,4", "--threads",
                                  "1", "--repeats", "3", "--in-loop", "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert {r["timed"].split(" (")[0] for r in json.loads(path.read_text())["rows"]} == {"loop"}
    assert "timed in chunks of the compiled training loop" in result.output


@pytest.mark.parametrize("args,match", [
    (["--batch-sizes", "0,4"], "batch sizes must be >= 1"),
    (["--batch-sizes", "a,b"], "comma-separated"),
    (["--threads", "0"], "threads must lie between"),
    (["--backend", "gpu"], "gpu"),
    (["--dtype", "float16"], "float32 or float64"),
    (["--breakdown", "0"], "breakdown batch sizes must be >= 1"),
    (["--compare", "mxnet"], "unknown framework 'mxnet'"),
    (["--json", "/nonexistent-dir/x.json"], "does not exist; create it first"),
    (["--figures", "/proc/no-figures-here"], "--figures: cannot create directory"),
])
def test_cli_bad_value_exits_2_with_one_line(tmp_path, args, match):
    path = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, "-m", "minigrad.cli", "bench", "throughput", "--sizes", "8,8,2",
                           "--json", str(path), *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert match in proc.stderr and "Traceback" not in proc.stderr
    assert len(lines) == 1 or lines[-1].startswith("Error")  # click's usage errors add a usage line
    assert not path.exists()


@pytest.fixture(scope="module")
def profiled():
    return throughput.measure(SIZES, [1, 16], backends=["blas", "per-example"], threads=[1],
                              dtypes=["float32", "float64"], repeats=3, ceiling_n=64, breakdown=[16])


def test_float32_and_float64_rows_with_memory(profiled):
    rows = profiled["rows"]
    assert [(r["dtype"], r["backend"], r["batch_size"]) for r in rows] == [
        (d, b, B) for d in ("float32", "float64") for b in ("blas", "per-example") for B in (1, 16)]
    import numba

    saved = numba.get_num_threads()
    numba.set_num_threads(1)  # as measured: the fused step's buffers depend on the thread count
    try:
        counts = [MLP(SIZES, dtype=r["dtype"], backend=r["backend"]).memory_count(r["batch_size"], "sgd")["total"]
                  for r in rows]
    finally:
        numba.set_num_threads(saved)
    for r, count in zip(rows, counts):
        assert r["mem_counted_bytes"] == count
        # measured: what the step really allocated; the count names all of it but Python's own small objects
        assert r["mem_counted_bytes"] <= r["mem_measured_bytes"] < r["mem_counted_bytes"] + 64_000
    f32, f64 = rows[0], rows[4]
    assert f64["mem_parameters_bytes"] == 2 * f32["mem_parameters_bytes"]


def test_breakdowns_and_roofline_in_the_result(profiled):
    entries = profiled["breakdowns"]
    assert [(e["dtype"], e["backend"]) for e in entries] == [
        (d, b) for d in ("float32", "float64") for b in ("blas", "per-example")]
    for e in entries:
        assert e["batch_size"] == 16 and e["threads"] == 1
        assert sum(op["seconds"] for op in e["ops"]) == pytest.approx(e["compiled_step_s"], rel=1e-9)
        assert [r["op"] for r in e["roofline"]] == [op["name"] for op in e["ops"] if op["kind"] == "gemm"]
    assert profiled["bandwidths"][1] > 0 and profiled["cache_bandwidths"][1] > 0
    out = io.StringIO()
    profile_report.print_result(profiled, file=out)
    text = out.getvalue()
    for title in ("Peak memory of training", "Where the time of one step goes: B=16, 1 thread(s), float64",
                  "Roofline: B=16", "share outside compiled code", "gradient accumulation"):
        assert title in text


def test_figures_are_written(profiled, tmp_path):
    from minigrad.profile.figures import throughput_figures

    paths = throughput_figures(profiled, tmp_path / "figs")
    assert [p.name for p in paths] == ["throughput_samples.png", "throughput_per_example.png",
                                       "roofline_float32.png", "roofline_float64.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_cli_compare_with_a_missing_framework_skips_it(tmp_path):
    pytest.importorskip("numba")
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed here: nothing is missing")
    except ImportError:
        pass
    result = CliRunner().invoke(main, ["bench", "throughput", "--sizes", "8,8,2", "--batch-sizes", "1", "--threads",
                                       "1", "--repeats", "3", "--compare", "torch"])
    assert result.exit_code == 0, result.output
    assert "torch is not installed in" in result.output and "skipped" in result.output


def test_cli_breakdown_and_figures(tmp_path):
    result = CliRunner().invoke(main, ["bench", "throughput", "--sizes", "8,8,2", "--batch-sizes", "1,4",
                                       "--threads", "1", "--repeats", "3", "--breakdown", "4", "--figures",
                                       str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Where the time of one step goes: B=4" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "roofline_float32.png", "throughput_per_example.png", "throughput_samples.png"]


def test_breakdown_sets_the_loops_gemms_against_blas():
    def entry(backend, gemm, rest):
        return dict(backend=backend, compiled_step_s=gemm + rest,
                    ops=[dict(kind="gemm", seconds=gemm), dict(kind="activation", seconds=rest)])

    lines = profile_report._loops_against_blas([entry("blas", 1e-3, 1e-4), entry("loops", 3.5e-3, 1e-4)])
    assert lines[0].startswith("loops against blas: GEMMs 3.50 ms against 1.00 ms (3.5x), other ops 100.0 us")
    assert "no register tiling and no packing" in lines[0]
    assert profile_report._loops_against_blas([entry("loops", 1e-3, 0.0)]) == []  # nothing to set it against


def test_an_op_below_the_noise_is_never_printed_as_a_negative_time(profiled):
    import copy
    import io
    import re

    from minigrad.profile import report as profile_report

    result = copy.deepcopy(profiled)
    result["breakdowns"] = result["breakdowns"][:1]
    for op in result["breakdowns"][0]["ops"]:  # a busy machine may already have measured one below the noise
        op["seconds"] = abs(op["seconds"]) or 1e-7
    out = io.StringIO()
    profile_report._print_breakdowns(result, out)
    assert "~0*" not in out.getvalue()  # negative control: nothing below the noise, nothing starred
    result["breakdowns"][0]["ops"][1]["seconds"] = -3e-7  # a prefix difference that came out negative
    out = io.StringIO()
    profile_report._print_breakdowns(result, out)
    text = out.getvalue()
    assert "~0*" in text and "shorter than the timing noise" in text
    assert not re.search(r"-\d+(\.\d+)? ?(ns|us|ms|s)\b", text)


def test_steps_timed_in_the_compiled_loop():
    # the study's throughput phase times chunks of loop steps (training.train.step_chunk), not Python calls
    from minigrad.training.train import step_chunk

    rows = throughput.measure(SIZES, [1, 16], threads=[1], ceiling_n=64, min_time=0.02, chunk=step_chunk,
                              progress=False)["rows"]
    assert [r["timed"].split(" (")[0] for r in rows] == ["loop", "loop"]
    assert all(r["step_time_s"] > 0 and r["repeats"] > 0 for r in rows)
    plain = throughput.measure(SIZES, [1], threads=[1], ceiling_n=64, min_time=0.02, progress=False)["rows"]
    assert plain[0]["timed"] == "call"
