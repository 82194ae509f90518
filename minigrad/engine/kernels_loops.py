"""The linear layer's GEMMs as plain Numba loops: the same signatures as kernels.linear_forward/linear_backward.

Set against the BLAS path, these show what a tuned BLAS adds. Both paths vectorise their innermost loop over a
contiguous row (SIMD), and both block the loops so a tile of rows stays in cache. These loops also handle 4 examples
per pass over a weight row, so each load of the row feeds 4 multiply-adds, and they accumulate in the arrays' own
dtype (a float64 accumulator would halve the SIMD width for float32 and add a conversion per element). What they
lack, and an OpenBLAS sgemm has, is a two-dimensional register tile (a micro-kernel keeping e.g. a 4x16 block of
`out` in registers, so every load feeds a whole row or column of multiply-adds) and packing (copying panels into the
exact order the micro-kernel reads). kernels_small.py goes one step further (two weight rows by four examples).

Each body is compiled twice: serial with cache=True, and parallel=True (uncached: cached parallel code is known to
crash when the thread count changes). `prange` is a plain range in the serial build.

Legend: B = batch size, C = input features, OC = output features.
"""
from numba import njit, prange

from minigrad.engine.kernels import FASTMATH

TILE = 64  # rows of `out` / `dweight` / `dinp` handled per block: a 64 x C block of fp32 inputs stays in L2


def _linear_forward(out, inp, weight, bias):
    # inp (B,C), weight (OC,C), bias (OC,) -> out (B,OC)
    # out[b,o] = bias[o] + sum_c inp[b,c] * weight[o,c]: dot products of contiguous rows, 4 examples at a time.
    # Blocks of TILE output features run in parallel; inside a block, each weight row is reused by every example.
    B, C = inp.shape
    OC = weight.shape[0]
    zero = out.dtype.type(0)
    for ot in prange((OC + TILE - 1) // TILE):
        o_end = min((ot + 1) * TILE, OC)
        b = 0
        while b + 4 <= B:
            for o in range(ot * TILE, o_end):
                a0 = a1 = a2 = a3 = zero
                for c in range(C):
                    w = weight[o, c]
                    a0 += inp[b, c] * w
                    a1 += inp[b + 1, c] * w
                    a2 += inp[b + 2, c] * w
                    a3 += inp[b + 3, c] * w
                out[b, o] = a0 + bias[o]
                out[b + 1, o] = a1 + bias[o]
                out[b + 2, o] = a2 + bias[o]
                out[b + 3, o] = a3 + bias[o]
            b += 4
        for b in range(b, B):
            for o in range(ot * TILE, o_end):
                acc = zero
                for c in range(C):
                    acc += inp[b, c] * weight[o, c]
                out[b, o] = acc + bias[o]


def _linear_backward(dinp, dweight, dbias, dout, inp, weight, need_dinp):
    # dout (B,OC), inp (B,C), weight (OC,C) -> dweight (OC,C), dbias (OC,), dinp (B,C) if need_dinp
    B, C = inp.shape
    OC = weight.shape[0]
    # dweight[o,:] = sum_b dout[b,o] * inp[b,:]: rows of dweight are independent, so blocks of them run in parallel.
    # Each row of the block stays in L1 while the examples are added in, 4 per pass over the row.
    for ot in prange((OC + TILE - 1) // TILE):
        o_end = min((ot + 1) * TILE, OC)
        for o in range(ot * TILE, o_end):
            dbias[o] = 0.0
            for c in range(C):
                dweight[o, c] = 0.0
            b = 0
            while b + 4 <= B:
                g0, g1, g2, g3 = dout[b, o], dout[b + 1, o], dout[b + 2, o], dout[b + 3, o]
                dbias[o] += g0 + g1 + g2 + g3
                for c in range(C):
                    dweight[o, c] += g0 * inp[b, c] + g1 * inp[b + 1, c] + g2 * inp[b + 2, c] + g3 * inp[b + 3, c]
                b += 4
            for b in range(b, B):
                g = dout[b, o]
                dbias[o] += g
                for c in range(C):
                    dweight[o, c] += g * inp[b, c]
    if need_dinp:
        # dinp[b,:] = sum_o dout[b,o] * weight[o,:]: rows of dinp are independent; 4 weight rows per pass over it.
        for b in prange(B):
            for c in range(C):
                dinp[b, c] = 0.0
            o = 0
            while o + 4 <= OC:
                g0, g1, g2, g3 = dout[b, o], dout[b, o + 1], dout[b, o + 2], dout[b, o + 3]
                for c in range(C):
                    dinp[b, c] += g0 * weight[o, c] + g1 * weight[o + 1, c] + g2 * weight[o + 2, c] + \
                        g3 * weight[o + 3, c]
                o += 4
            for o in range(o, OC):
                g = dout[b, o]
                for c in range(C):
                    dinp[b, c] += g * weight[o, c]


linear_forward = njit(cache=True, fastmath=FASTMATH)(_linear_forward)
linear_backward = njit(cache=True, fastmath=FASTMATH)(_linear_backward)
linear_forward_parallel = njit(parallel=True, fastmath=FASTMATH)(_linear_forward)
linear_backward_parallel = njit(parallel=True, fastmath=FASTMATH)(_linear_backward)
