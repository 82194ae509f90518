"""bench/limits.py measures what it says: the bare passes over the weights are a forward read and an in-place update,
and the GEMMs it times are the big GEMMs of the large-batch step."""
import os
import sys
from collections import Counter

import numba
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import limits  # noqa: E402

from minigrad.profile.breakdown import large_sgd_ops  # noqa: E402


@pytest.mark.parametrize("T", [1, 2])
def test_the_bare_passes_are_a_forward_read_and_an_update_of_every_weight(T):
    three_passes = limits._passes_kernels()
    r = np.random.default_rng(0)
    sizes = [37, 21, 5]
    Ws = tuple(r.standard_normal((o, c)).astype(np.float32) for c, o in zip(sizes[:-1], sizes[1:]))
    xs = tuple(r.standard_normal(c).astype(np.float32) for c in sizes[:-1])
    outs = tuple(np.zeros(o, np.float32) for o in sizes[1:])
    before = [W.astype(np.float64) for W in Ws]
    three_passes(min(T, numba.get_num_threads()), Ws, xs, outs)
    for W0, W, x, out in zip(before, Ws, xs, outs):
        np.testing.assert_allclose(out, W0 @ x, rtol=1e-4, atol=1e-4)  # every row read by the forward pass
        expected = W0 - 1e-6 * np.outer(out, x)
        np.testing.assert_allclose(W, expected, rtol=1e-6, atol=1e-9)  # and rewritten by the update
        # negative control: the check tells an updated matrix from the untouched one
        assert not np.allclose(W0, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("B", [1024, 4096])
def test_the_timed_gemms_are_the_big_gemms_of_the_large_batch_step(B):
    step = Counter(op.shape for op in large_sgd_ops(limits.SIZES, B, "relu", fold_first=False) if op.kind == "gemm")
    timed = Counter((M, N, K) for _, M, N, K, _ in limits.gemm_shapes(B))
    assert sum(timed.values()) == 5 and not timed - step  # every timed GEMM is one of the step's
    # what is left out is the thin last layer's three (10 classes): about 1% of the step's flops
    left_out = step - timed
    assert sum(left_out.values()) == 3 and all(limits.SIZES[-1] in shape for shape in left_out)
    flops = sum(np.prod(s) * n for s, n in step.items())
    assert sum(np.prod(s) * n for s, n in left_out.items()) < 0.02 * flops
