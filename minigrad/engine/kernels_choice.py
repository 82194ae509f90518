"""Which linear kernels (forward, backward) each backend runs at a batch size: BLAS, the loops, or the small-batch
kernels that stand in for BLAS at small B.
"""
from minigrad.engine import kernels as K
from minigrad.engine import kernels_loops as KL
from minigrad.engine import kernels_small as KS

# backend name -> (linear_forward, linear_backward) with the signatures of kernels.py
BACKENDS = {
    "blas": (K.linear_forward, K.linear_backward),
    # the same kernels with every op a pass of its own at every B (no fused step): the readable path to profile
    "blas-unfused": (K.linear_forward, K.linear_backward),
    "loops": (KL.linear_forward, KL.linear_backward),
    "loops-parallel": (KL.linear_forward_parallel, KL.linear_backward_parallel),
    # B single-example passes with the gradient accumulated (passes.forward_backward_per_example); batched forward
    # passes (evaluate, logits) go through BLAS
    "per-example": (K.linear_forward, K.linear_backward),
}
SMALL = (KS.linear_forward, KS.linear_backward)

# Batch sizes up to which the blas backends use the small-batch kernels instead of BLAS (gradients, evaluation, and
# train steps of optimizers other than plain SGD). Measured side by side on 2 Zen 5 cores (784-256-256-10, float32,
# OpenBLAS 0.3.30 with its Haswell kernels): the small kernels overtake BLAS between B = 8 and 16.
SMALL_BATCH_MAX = 8


def linear_kernels(backend, B):
    """(linear_forward, linear_backward) of `backend` at batch size B: the small-batch kernels stand in for BLAS up
    to SMALL_BATCH_MAX rows (also for evaluation and plain gradients)."""
    small = backend in ("blas", "blas-unfused", "per-example") and B <= SMALL_BATCH_MAX
    return SMALL if small else BACKENDS[backend]
