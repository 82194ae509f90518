"""minigrad.profile.breakdown and minigrad.profile.roofline: the op-by-op mirror of the train step is the train step, each prefix
runs exactly its ops, the GEMM bookkeeping is right, and the model's memory count is what it allocates."""
import math

import numpy as np
import pytest

from minigrad import MLP, make_optimizer
from minigrad.engine import kernels_small as KS
from minigrad.engine import steps as S
from minigrad.profile import breakdown as BD
from minigrad.profile import roofline
from minigrad.profile.batches import make_batches

SIZES = [12, 16, 8, 3]


def setup(B, optimizer="adam", backend="blas", dtype=np.float64):
    X, y = make_batches(SIZES, [B], dtype)[B]
    model, opt = MLP(SIZES, dtype=dtype, backend=backend, seed=0), make_optimizer(optimizer, 0.01)
    opt.bind(model)
    step = model.step_for(B, opt)
    args = (*step.linear, step.net, step.grads, step.work, X, y, step.update(opt))
    return model, opt, X, y, args


@pytest.mark.parametrize("B", [1, 5, 64])
def test_the_whole_prefix_is_the_train_step(B):
    ops = BD.step_ops(SIZES, B, "relu", "adam")
    model, opt, X, y, args = setup(B)
    twin, twin_opt = model.copy(), make_optimizer("adam", 0.01)
    assert BD.step_prefix(len(ops), *args) == len(ops)
    twin.train_step(X, y, twin_opt)
    np.testing.assert_array_equal(model.params, twin.params)
    np.testing.assert_array_equal(model.grads_buffer, twin.grads)


def test_each_prefix_stops_after_its_ops():
    B = 6
    ops = BD.step_ops(SIZES, B, "relu", "sgd")
    names = [op.name for op in ops]
    assert names[:6] == ["layer 1 forward GEMM (+bias)", "layer 1 relu forward", "layer 2 forward GEMM (+bias)",
                         "layer 2 relu forward", "layer 3 forward GEMM (+bias)", "softmax cross-entropy"]
    assert names[-1] == "sgd update" and len(ops) == (3 + 2) + 1 + (3 + 2 + 2) + 1
    reference, _, X, y, ref_args = setup(B, "sgd")
    reference.loss_and_grad(X, y)
    for stop in range(len(ops) + 1):
        model, opt, _, _, args = setup(B, "sgd")
        before = model.params.copy()
        model.grads_buffer[:] = np.nan
        assert BD.step_prefix(stop, *args) == stop
        # the update is the last op: every shorter prefix leaves the parameters alone (negative control: the full one)
        assert np.array_equal(model.params, before) == (stop < len(ops))
        # a prefix that ends with a weight gradient has that layer's weight gradient and none of the earlier layers'
        done = [n for n in names[:stop] if "weight-gradient" in n]
        for l in range(3):
            has = f"layer {l + 1} weight-gradient GEMM (+bias)" in done
            np.testing.assert_array_equal(np.isnan(model.grads_views.dweights[l]).all(), not has)
            if has:
                np.testing.assert_allclose(model.grads_views.dweights[l], reference.dweights[l], rtol=1e-12)


def test_breakdown_adds_up_and_names_every_op(monkeypatch):
    # the unfused step's ops, while MLP.train_step_trusted runs kernels_small's fused step (forced: the thresholds give
    # this small model kernels_large's step, whose breakdown is tested below)
    monkeypatch.setattr(S, "FUSED_SGD_MAX", {1: 64, 2: 64})
    monkeypatch.setattr(S, "FUSED_SGD_MIN_PARAMS", 0)
    model, opt, X, y, _ = setup(32, "sgd", dtype=np.float32)
    result = BD.breakdown(model, opt, X, y, samples=5, target=2e-4)
    assert [op.name for op in result["ops"]] == [op.name for op in BD.step_ops(SIZES, 32, "relu", "sgd")]
    assert sum(result["op_s"]) == pytest.approx(result["compiled_step_s"], rel=1e-9)
    # the compiled step is a sum of differences of timings: its sign is a benchmark's business (bench/), not a test's
    assert math.isfinite(result["compiled_step_s"]) and result["python_call_s"] > 0 and result["train_step_s"] > 0
    assert result["fused"]  # blas + SGD at B = 32: the training loop runs the fused step


def test_per_example_breakdown_counts_each_pass_B_times():
    model, opt, X, y, _ = setup(8, "sgd", backend="per-example", dtype=np.float32)
    result = BD.breakdown(model, opt, X, y, samples=5, target=2e-4)
    ops = result["ops"]
    assert ops[-1].kind == "accumulation" and ops[-2].name == "sgd update" and ops[-2].repeat == 1
    gemm = ops[0]
    assert gemm.shape == (1, SIZES[1], SIZES[0]) and gemm.repeat == 8 and gemm.flops == 8 * 2 * SIZES[1] * SIZES[0]
    assert sum(result["op_s"]) == pytest.approx(result["compiled_step_s"], rel=1e-9)
    assert not result["fused"]


def test_gemm_intensity_and_roofline_rows():
    op = BD.Op("g", "gemm", (64, 256, 784))
    assert op.flops == 2 * 64 * 256 * 784
    assert op.bytes(4) == (64 * 784 + 784 * 256 + 64 * 256) * 4
    # a batch of one is a matrix-vector product: below 0.5 flop/byte in float32, memory-bound on any machine
    gemv = BD.Op("v", "gemm", (1, 256, 784))
    assert gemv.flops / gemv.bytes(4) < 0.5 < op.flops / op.bytes(4) / 40
    result = dict(ops=[op, gemv, BD.Op("relu", "activation")], op_s=[1e-4, 1e-5, 1e-6])
    rows = roofline.gemm_rows(result, 4, ceiling_gflops=200.0, bandwidth_gbs=20.0)
    assert [r["op"] for r in rows] == ["g", "v"]
    assert rows[0]["attainable_gflops"] == 200.0  # compute-bound
    assert rows[1]["attainable_gflops"] == pytest.approx(20.0 * gemv.flops / gemv.bytes(4))  # memory-bound
    assert rows[0]["gflops"] == pytest.approx(op.flops / 1e-4 / 1e9)
    assert rows[0]["pct_of_attainable"] == pytest.approx(100 * rows[0]["gflops"] / 200.0)


def test_bandwidths_are_measured():
    # which is faster is a timing comparison, and a busy machine can reverse it: bench/test_bench_machine.py
    dram = roofline.memory_bandwidth(n_bytes=96 * 2**20, repeats=3)
    l2 = roofline.cache_bandwidth(1, reps=500, repeats=3)
    assert 0 < dram < 2000 and 0 < l2 < 1e5


def held_bytes(model, opt):
    # every array the model and optimizer hold, counted from the objects themselves (views not counted twice)
    arrays = [model.params, model.grads_buffer, opt.state]
    if model.backend == "per-example":
        arrays.append(model.one_example.grads)
    for ws in model._workspaces.values():
        arrays += [*ws.zs, *ws.acts[:-1], *ws.dzs, ws.sqnorms, ws.X, ws.y]
    for step in model._steps.values():  # the fused steps' own buffers, once allocated
        buffers = step.defers_grads and step._buffers
        if isinstance(buffers, KS.Fused):
            arrays += [*buffers.parts, buffers.dlogits, buffers.counter, buffers.value, buffers.X]
        elif buffers:
            arrays += [buffers.X, buffers.sums, buffers.ints, buffers.flags, buffers.scalars]  # dweight0 is a view
    return sum(a.nbytes for a in arrays)


@pytest.mark.parametrize("backend,optimizer,B", [("blas", "sgd", 4), ("blas", "sgd", 200), ("blas", "sgd", 12), ("blas", "adam", 4),
                                                 ("loops", "momentum", 50), ("per-example", "sgd", 7)])
def test_memory_count_is_what_the_model_allocates(backend, optimizer, B):
    X, y = make_batches(SIZES, [B], np.float32)[B]
    model, opt = MLP(SIZES, backend=backend), make_optimizer(optimizer, 0.01)
    model.train_step(X, y, opt)
    count = model.memory_count(B, optimizer)
    assert count["total"] == held_bytes(model, opt)
    assert count["total"] == sum(v for k, v in count.items() if k != "total")
    assert count["parameters"] == model.params.nbytes and count["optimizer_state"] == opt.state.nbytes


@pytest.mark.parametrize("sizes", [[12, 90, 8, 3], [12, 16, 8, 3]])  # B < OC_0 folds the first layer, B >= does not
def test_the_whole_large_sgd_prefix_is_the_fused_blas_step(sizes):
    B = 60
    X, y = make_batches(sizes, [B], np.float64)[B]
    model, opt = MLP(sizes, dtype=np.float64, seed=0), make_optimizer("sgd", 0.01)
    twin, twin_opt = model.copy(), make_optimizer("sgd", 0.01)
    assert model.step_path(B, opt) == "blas-fused-sgd"
    twin.train_step(X, y, twin_opt)  # kernels_large.sgd_step through the model
    step, lb = model.step_for(B, opt), twin.step_for(B, twin_opt).buffers
    ops = BD.large_sgd_ops(sizes, B, "relu", lb.fold_first)
    assert sum(op.kind == "gemm" for op in ops) == 3 + 2 + 3  # forward, input-gradient, weight-gradient(+update)
    mine = lb._replace(dweight0=model.grads_views.dweights[0], X=np.zeros_like(lb.X), sums=np.zeros_like(lb.sums))
    args = (step.net, step.work, tuple(mine), X, y, 0.01)
    before = model.params.copy()
    assert BD.large_sgd_prefix(len(ops) - 1, *args) == len(ops) - 1
    assert not np.array_equal(model.params, before)  # the earlier layers' updates ran ...
    np.testing.assert_array_equal(model.weights[0], before[:sizes[0] * sizes[1]].reshape(sizes[1], sizes[0]))
    model.params[...] = before  # ... and the full prefix is the step, bit for bit
    assert BD.large_sgd_prefix(len(ops), *args) == len(ops)
    np.testing.assert_array_equal(model.params, twin.params)


def test_breakdown_of_the_fused_blas_step_times_its_own_ops():
    sizes, B = [12, 90, 8, 3], 60
    X, y = make_batches(sizes, [B], np.float32)[B]
    model, opt = MLP(sizes, seed=0), make_optimizer("sgd", 1e-4)
    result = BD.breakdown(model, opt, X, y, samples=3, target=1e-4)
    assert [op.name for op in result["ops"]] == [op.name for op in BD.large_sgd_ops(sizes, B, "relu", True)]
    assert sum(result["op_s"]) == pytest.approx(result["compiled_step_s"])
    assert result["fused"]
