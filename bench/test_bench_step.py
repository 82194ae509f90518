"""One training step (forward, backward, update) of the 784-256-256-10 MLP per batch size and backend.

The step is the training loop's path (MLP.train_step_trusted on a batch validated once), as `minigrad bench throughput`
times it; here pytest-benchmark does the statistics (rounds, calibration, outliers) and the comparison between
saved runs (--benchmark-compare). extra_info adds samples/s and GFLOP/s from the median.
"""
import numpy as np
import pytest

from minigrad import MLP, make_optimizer

SIZES = [784, 256, 256, 10]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096]


def step_for(backend, B, optimizer="sgd", dtype=np.float32):
    r = np.random.default_rng(B)
    X, y = r.standard_normal((B, SIZES[0])).astype(dtype), r.integers(0, SIZES[-1], B)
    model, opt = MLP(SIZES, dtype=dtype, backend=backend, seed=0), make_optimizer(optimizer, 1e-4)
    model.check_batch(X, y)
    model.train_step_trusted(X, y, opt)  # JIT warm-up: compile everything this batch size needs
    model.train_step_trusted(X, y, opt)
    return model, lambda: model.train_step_trusted(X, y, opt)


def run(benchmark, record, backend, B, optimizer="sgd"):
    model, step = step_for(backend, B, optimizer)
    record(backend=backend, batch_size=B, sizes=SIZES, dtype="float32", optimizer=optimizer,
           flops_per_step=model.flops_per_step(B))
    benchmark(step)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(samples_per_s=B / median, gflops=model.flops_per_step(B) / median / 1e9)


@pytest.mark.parametrize("B", BATCH_SIZES)
def test_step_blas(benchmark, record, B):
    run(benchmark, record, "blas", B)


@pytest.mark.parametrize("B", [1, 8, 64, 1024])
@pytest.mark.parametrize("backend", ["loops", "loops-parallel", "per-example"])
def test_step_loops(benchmark, record, backend, B):
    run(benchmark, record, backend, B)


@pytest.mark.parametrize("B", [1, 8, 64, 1024])
def test_step_blas_adam(benchmark, record, B):
    # an optimizer with state: never the fused SGD step, so this times the small-batch kernels / BLAS + update
    run(benchmark, record, "blas", B, optimizer="adam")
