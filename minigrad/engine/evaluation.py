"""Evaluation in one compiled pass: the mean loss and error rate of a model over a whole split, in blocks.

Legend: N = examples of the split, R = rows per block.
"""
from numba import njit

from minigrad.engine import kernels as K
from minigrad.engine import kernels_small as KS
from minigrad.engine import passes as P
from minigrad.engine.model import Workspace
from minigrad.engine.steps import linear_kernels


@njit
def evaluate_block(linear_forward, net, work, X, y, start):
    # the rows X[start:start+R] through an R-row workspace (laid out as kernels.Work) -> (summed loss, errors)
    zs, acts, dzs = work
    rows = zs[0].shape[0]
    xb, yb = X[start:start + rows], y[start:start + rows]
    P.forward(linear_forward, net, work, xb)
    L = len(zs)
    return K.loss_forward_backward(net[1], dzs[L - 1], acts[L - 1], yb) * rows, K.errors_count(acts[L - 1], yb)


@njit
def evaluate_pass(forward_full, forward_rest, net, full, rest, X, y):
    # X (N,C), y (N,) -> (mean loss, error rate), in blocks of R rows (full: the kernels.Work of an R-row
    # workspace) and one block of N mod R rows (rest). Sums as MLP.evaluate does them, block by block.
    N = X.shape[0]
    R = full[0][0].shape[0]
    total, wrong = 0.0, 0
    start = 0
    while start + R <= N:
        block_loss, block_wrong = evaluate_block(forward_full, net, full, X, y, start)
        total += block_loss
        wrong += block_wrong
        start += R
    if start < N:
        block_loss, block_wrong = evaluate_block(forward_rest, net, rest, X, y, start)
        total += block_loss
        wrong += block_wrong
    return total / N, wrong / N


# evaluate_pass for the blas backend's kernel pairs, with no function among their arguments, so that Numba caches
# them on disk (a function taking another as an argument is compiled anew in every process). (The same wrappers
# around run_steps are refused by Numba's cache: it reports dynamic globals somewhere in the train steps.)
@njit(cache=True)
def evaluate_blas(net, full, rest, X, y):
    return evaluate_pass(K.linear_forward, K.linear_forward, net, full, rest, X, y)


@njit(cache=True)
def evaluate_blas_small(net, full, rest, X, y):
    return evaluate_pass(K.linear_forward, KS.linear_forward, net, full, rest, X, y)


@njit(cache=True)
def evaluate_small(net, full, rest, X, y):
    return evaluate_pass(KS.linear_forward, KS.linear_forward, net, full, rest, X, y)


def evaluation_runner(forward_full, forward_rest):
    cached = {(K.linear_forward, K.linear_forward): evaluate_blas,
              (K.linear_forward, KS.linear_forward): evaluate_blas_small,
              (KS.linear_forward, KS.linear_forward): evaluate_small}
    return cached.get((forward_full, forward_rest)) or (lambda *a: evaluate_pass(forward_full, forward_rest, *a))


EVAL_ROWS = 512  # rows per evaluation block: large enough for BLAS, small enough to stay in L2


class Evaluator:
    """Mean loss and error of `model` over one split (X, y) in one compiled call, on buffers of its own (the
    training workspaces keep the batch, which MLP.grads may still need)."""

    def __init__(self, model, X, y, rows=EVAL_ROWS):
        self.model, self.X, self.y = model, X, y
        N = X.shape[0]
        R = min(rows, N)
        self.full = Workspace(model.sizes, R, model.dtype)
        self.rest = Workspace(model.sizes, max(N % R, 1), model.dtype)
        self.run = evaluation_runner(linear_kernels(model.backend, R)[0],
                                     linear_kernels(model.backend, self.rest.X.shape[0])[0])
        self.args = K.plain(model.net), K.plain(self.full.work), K.plain(self.rest.work)

    def __call__(self):
        return self.run(*self.args, self.X, self.y)
