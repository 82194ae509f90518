"""The linear layer's GEMMs as plain Numba loops: the same signatures as kernels.linear_forward/linear_backward.

Set against the BLAS path, these show what a tuned BLAS adds. Both paths vectorise their innermost loop over a
contiguous row (SIMD), and both block the loops so a tile of rows stays in cache. What these loops lack, and an
OpenBLAS sgemm has, is register tiling (a micro-kernel keeping a 4x16 or so block of `out` in registers, so each load
of `inp` and `weight` feeds several multiply-adds) and packing (copying panels into the exact order the micro-kernel
reads). Without them each multiply-add needs about one load, and the loops run at a fraction of the GEMM ceiling.

Each body is compiled twice: serial with cache=True, and parallel=True (uncached: cached parallel code is known to
crash when the thread count changes). `prange` is a plain range in the serial build.

Legend: B = batch size, C = input features, OC = output features.
"""
from numba import njit, prange

from minigrad.kernels import FASTMATH

TILE = 64  # rows of `out` / `dweight` / `dinp` handled per block: a 64 x C block of fp32 inputs stays in L2


def _linear_forward(out, inp, weight, bias):
    # inp (B,C), weight (OC,C), bias (OC,) -> out (B,OC)
    # out[b,o] = bias[o] + sum_c inp[b,c] * weight[o,c]: a dot product of two contiguous rows.
    # Blocks of TILE output features run in parallel; inside a block, each weight row is reused by every example.
    B, C = inp.shape
    OC = weight.shape[0]
    for ot in prange((OC + TILE - 1) // TILE):
        o_end = min((ot + 1) * TILE, OC)
        for b in range(B):
            for o in range(ot * TILE, o_end):
                acc = 0.0
                for c in range(C):
                    acc += inp[b, c] * weight[o, c]
                out[b, o] = acc + bias[o]


def _linear_backward(dinp, dweight, dbias, dout, inp, weight, need_dinp):
    # dout (B,OC), inp (B,C), weight (OC,C) -> dweight (OC,C), dbias (OC,), dinp (B,C) if need_dinp
    B, C = inp.shape
    OC = weight.shape[0]
    # dweight[o,:] = sum_b dout[b,o] * inp[b,:]: rows of dweight are independent, so blocks of them run in parallel.
    # Inside a block each input row inp[b,:] is loaded once and used for all TILE rows of the block.
    for ot in prange((OC + TILE - 1) // TILE):
        o_end = min((ot + 1) * TILE, OC)
        for o in range(ot * TILE, o_end):
            dbias[o] = 0.0
            for c in range(C):
                dweight[o, c] = 0.0
        for b in range(B):
            for o in range(ot * TILE, o_end):
                g = dout[b, o]
                dbias[o] += g
                for c in range(C):
                    dweight[o, c] += g * inp[b, c]
    if need_dinp:
        # dinp[b,:] = sum_o dout[b,o] * weight[o,:]: rows of dinp are independent.
        for b in prange(B):
            for c in range(C):
                dinp[b, c] = 0.0
            for o in range(OC):
                g = dout[b, o]
                for c in range(C):
                    dinp[b, c] += g * weight[o, c]


linear_forward = njit(cache=True, fastmath=FASTMATH)(_linear_forward)
linear_backward = njit(cache=True, fastmath=FASTMATH)(_linear_backward)
linear_forward_parallel = njit(parallel=True, fastmath=FASTMATH)(_linear_forward)
linear_backward_parallel = njit(parallel=True, fastmath=FASTMATH)(_linear_backward)
