"""The machine's roofs as the roofline measures them, and the breakdown's sums: comparisons of timings, which a busy
machine can upset, so they live here and not in tests/.

    python -m pytest bench/test_bench_machine.py --benchmark-disable -q
"""
import numpy as np

from minigrad import MLP, make_optimizer
from minigrad.profile import breakdown as BD
from minigrad.profile import roofline
from minigrad.profile.batches import make_batches

SIZES = [784, 256, 256, 10]


def test_l2_is_faster_than_dram(threads):
    dram = roofline.memory_bandwidth(n_bytes=96 * 2**20, repeats=5)
    l2 = roofline.cache_bandwidth(threads, reps=500, repeats=5)
    print(f"\n{threads} thread(s): DRAM {dram:.1f} GB/s, L2 {l2:.1f} GB/s ({l2 / dram:.1f}x)")
    assert l2 > dram


def test_breakdown_ops_add_up_to_a_positive_step():
    X, y = make_batches(SIZES, [32], np.float32)[32]
    model, opt = MLP(SIZES), make_optimizer("sgd", 1e-4)
    model.check_batch(X, y)
    result = BD.breakdown(model, opt, X, y, samples=9, target=2e-3)
    print(f"\ncompiled step {result['compiled_step_s'] * 1e6:.1f} us, from Python {result['python_call_s'] * 1e6:.1f} us")
    assert result["compiled_step_s"] > 0
