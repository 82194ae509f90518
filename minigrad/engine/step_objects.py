"""The step objects: one class per kind of path, holding its kernels, buffers, Python call, compiled-loop runner,
deferred gradient (settle) and byte count. engine/steps.py registers them as paths and picks one (MLP.step_for).

Legend: B = batch size, T = workers (threads) of the fused step.
"""
import math

from minigrad.engine import kernels as K
from minigrad.engine import kernels_large as KG
from minigrad.engine import kernels_small as KS
from minigrad.engine import passes as P
from minigrad.engine import step_loops as SL
from minigrad.engine.kernels_choice import BACKENDS, SMALL, linear_kernels
from minigrad.engine.optim import STEP, WEIGHT_DECAY


def workspace_bytes(sizes, B, itemsize):
    """Bytes of model.Workspace(B) besides its activations: dzs, the per-example norms, the batch buffer and its
    int64 labels."""
    return B * sum(sizes[1:]) * itemsize + B * itemsize + B * sizes[0] * itemsize + B * 8


class Step:
    """A plain step: passes.train_step on the backend's linear kernels, every op its own pass."""

    defers_grads = False  # whether the step leaves model.grads to be formed on first read (settle)

    def __init__(self, model, name, B, T):
        self.model, self.name, self.B, self.T = model, name, B, T
        # blas-small and blas name their kernels; every other path takes its backend's at this B
        self.linear = SMALL if name == "blas-small" else BACKENDS["blas"] if name == "blas" else \
            linear_kernels(model.backend, B)
        # what the compiled calls take, as plain tuples (kernels.plain: the faster to hand over from Python)
        self.net, self.grads = K.plain(model.net), K.plain(model.grads_views)
        self._ws = self._work = None

    @property
    def ws(self):
        """The model's workspace of this batch size (allocated on first use: asking for a path allocates nothing)."""
        if self._ws is None:
            self._ws = self.model.workspace(self.B)
        return self._ws

    @property
    def work(self):
        """The workspace's zs, acts, dzs as the compiled calls take them (kernels.Work's layout)."""
        if self._work is None:
            self._work = K.plain(self.ws.work)
        return self._work

    def update(self, optimizer):
        """`optimizer`'s update of the model's flat vectors, laid out as kernels.Update."""
        m = self.model
        return optimizer.kind, m.params, m.grads_buffer, optimizer.state, optimizer.hyper

    def gradient(self, X, y, sqnorms):
        """Mean loss of the batch; fills model.grads_buffer (no update). sqnorms: see passes.forward_backward."""
        return P.forward_backward(*self.linear, self.net, self.grads, self.work, X, y, sqnorms)

    def __call__(self, X, y, optimizer):
        """One step from Python: the loss (NaN/Inf: the update was skipped)."""
        self.model.defer_grads(None)
        return P.train_step(*self.linear, self.net, self.grads, self.work, X, y, self.ws.no_sqnorms,
                            self.update(optimizer))

    def run(self, optimizer, chunk):
        """Steps of the compiled loop (step_loops; chunk: loop.Chunk on this step's workspace) -> why it stopped."""
        args = self.net, self.grads, self.work, self.ws.no_sqnorms, self.update(optimizer)  # step_loops.plain_step's
        return SL.run_steps(SL.plain_step, *self.linear, args, *chunk)

    def settle(self):
        """Form model.grads from what a deferring step kept (only steps that defer are asked)."""

    def count_bytes(self, parts):
        """Add the bytes this path holds besides the model's own buffers to MLP.memory_count's parts."""


class PerExampleStep(Step):
    """B single-example passes, their gradients accumulated, then one update (passes.train_step_per_example)."""

    def __init__(self, model, name, B, T):
        super().__init__(model, name, B, T)
        self.one = K.plain(model.one_example)

    def gradient(self, X, y, sqnorms):
        return P.forward_backward_per_example(self.net, self.one, X, y, sqnorms, self.model.grads_buffer)

    def __call__(self, X, y, optimizer):
        return P.train_step_per_example(self.net, self.one, X, y, self.ws.no_sqnorms, self.update(optimizer))

    def run(self, optimizer, chunk):
        args = self.net, self.one, self.ws.no_sqnorms, self.update(optimizer)
        return SL.run_steps(SL.per_example_step, *self.linear, args, *chunk)

    def count_bytes(self, parts):
        # one example's gradient besides the batch's, and the B = 1 workspace with its activations
        sizes, item = self.model.sizes, self.model.dtype.itemsize
        parts["gradients"] += self.model.n_params * item
        if self.B != 1:
            parts["workspace"] += workspace_bytes(sizes, 1, item) + (sum(sizes[1:]) + sum(sizes[1:-1])) * item


class DeferringStep(Step):
    """A fused plain-SGD step: it never forms the gradient, and keeps what it is made of (settle forms it)."""

    defers_grads = True
    _buffers = _kept = None

    @property
    def buffers(self):
        """The path's own buffers (a named tuple), allocated on first use."""
        if self._buffers is None:
            self._buffers = self.allocate()
        return self._buffers

    @property
    def kept(self):
        """The buffers as the kernel takes them (a plain tuple)."""
        if self._kept is None:
            self._kept = K.plain(self.buffers)
        return self._kept

    def kernel(self, X, y, optimizer):
        """The step's compiled call -> loss."""
        raise NotImplementedError

    def __call__(self, X, y, optimizer):
        self.model.defer_grads(None)
        value = self.kernel(X, y, optimizer)
        if math.isfinite(value):
            optimizer.hyper[STEP] += 1
            self.model.defer_grads(self)
        else:  # the update was skipped; the gradient (which the caller may inspect) comes from the plain path
            self.gradient(X, y, self.ws.no_sqnorms)
        return value

    def chunk_done(self, why, steps_before, chunk):
        # after a compiled chunk: the last batch's gradient is formed on first read
        if chunk.counters[SL.STEPS] > steps_before or why == SL.NONFINITE:
            self.model.defer_grads(self)
        return why


class FusedStep(DeferringStep):
    """kernels_small's one-pass step: forward, backward and the SGD update, each layer's rows split across T
    workers (serial on one)."""

    def allocate(self):
        return KS.fused_buffers(self.model.sizes, self.B, self.T, self.model.dtype)

    def barrier_failed(self, advice):
        if self.buffers.counter[KS.BARRIER_FAILED]:
            raise RuntimeError(f"the fused SGD step's {self.T} workers did not all run at once (threading layer "
                               f"problem); {advice}")

    def kernel(self, X, y, optimizer):
        lr, wd = optimizer.lr, float(optimizer.hyper[WEIGHT_DECAY])
        if self.T == 1:
            KS.sgd_step_serial(self.net, self.work, self.kept, X, y, lr, wd)
        else:
            KS.sgd_step_parallel(self.T, self.net, self.work, self.kept, X, y, lr, wd)
            self.barrier_failed("set numba.set_num_threads(1) to run it on one core")
        return float(self.buffers.value[0])

    def run(self, optimizer, chunk):
        args = self.net, self.work, self.kept, optimizer.hyper, self.T
        before = chunk.counters[SL.STEPS]
        if self.T == 1:
            why = SL.run_fused_serial(args, *chunk)
        else:
            why = SL.run_steps(SL.fused_parallel_step, *self.linear, args, *chunk)
            self.barrier_failed("run with one thread (--threads 1)")
        return self.chunk_done(why, before, chunk)

    def settle(self):
        # per layer dweight = dout^T inp and dbias = sum_b dout, by the register-blocked kernels; the first layer's
        # input is the step's copy of the batch, the last layer's dout worker 0's copy of the loss gradient
        m, fb, ws = self.model, self.buffers, self.ws
        L = len(m.weights)
        for l in range(L):
            dout = fb.dlogits[0] if l == L - 1 else ws.dzs[l]
            inp = ws.acts[l - 1] if l > 0 else fb.X
            KS.linear_dweight_rows(m.grads_views.dweights[l], m.grads_views.dbiases[l], dout, inp, 0, m.sizes[l + 1])

    def count_bytes(self, parts):
        # kernels_small.Fused: parts, dlogits and the batch copy, then the int64 counter (16) and float64 loss
        sizes, B, T, item = self.model.sizes, self.B, self.T, self.model.dtype.itemsize
        parts["workspace"] += (T * B * sum(sizes[:-1]) + T * B * sizes[-1] + B * sizes[0]) * item + 16 * 8 + 8


class LargeStep(DeferringStep):
    """kernels_large's step: BLAS GEMMs with the SGD update folded into the weight-gradient GEMMs and the bias
    passes into the activation passes."""

    rows = None  # the largest block of batch rows per forward / input-gradient GEMM (None: the whole batch)

    def allocate(self):
        return KG.large_buffers(self.model.sizes, self.B, self.model.dtype, self.model.grads_views.dweights[0],
                                self.rows)

    def kernel(self, X, y, optimizer):
        return KG.sgd_step(self.net, self.work, self.kept, X, y, optimizer.lr, float(optimizer.hyper[WEIGHT_DECAY]))

    def run(self, optimizer, chunk):
        before = chunk.counters[SL.STEPS]
        why = SL.run_large((self.net, self.work, self.kept, optimizer.hyper), *chunk)
        if why == SL.NONFINITE:
            # the step met the NaN/Inf before its backward pass: the gradient comes from the plain path
            self.gradient(self.ws.X, self.ws.y, self.ws.no_sqnorms)
            return why
        return self.chunk_done(why, before, chunk)

    def settle(self):
        # per layer dweight = dout^T inp and dbias = sum_b dout through BLAS; the first layer's input is the step's
        # copy of the batch, and when that layer was not folded its dweight is in place already (only dbias is left)
        m, lb, ws = self.model, self.buffers, self.ws
        for l in range(len(m.weights)):
            dout, inp = ws.dzs[l], ws.acts[l - 1] if l > 0 else lb.X
            if l == 0 and not lb.fold_first:
                KG.column_sums(m.grads_views.dbiases[0], dout)
            else:
                K.linear_backward(dout, m.grads_views.dweights[l], m.grads_views.dbiases[l], dout, inp, m.weights[l],
                                  False)

    def count_bytes(self, parts):
        # kernels_large.Large: the batch copy (first layer folded), the bias sums and BLAS's scalars (6 int32,
        # 2 uint8, 2 of the dtype)
        sizes, B, item = self.model.sizes, self.B, self.model.dtype.itemsize
        parts["workspace"] += ((B * sizes[0] if B < sizes[1] else 0) + max(sizes[1:]) + 2) * item + 26


class BlockedLargeStep(LargeStep):
    """kernels_large's step with its forward and input-gradient GEMMs in blocks of `rows` batch rows, where
    the BLAS's small-matrix kernel is faster than its packed one (kernels_large.gemm_rows)."""

    rows = 8

