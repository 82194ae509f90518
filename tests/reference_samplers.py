"""The batch samplers in plain Python: one batch of row indices per step. The specification that the training loop's
compiled samplers (minigrad.engine.loop) are tested against, and tested themselves in tests/test_data.py."""
from __future__ import annotations


import numpy as np

from minigrad.data.dataset import DataError, _int_in

from minigrad.machine.settings import SAMPLERS


# ----------------------------------------------------------------------------------------------------------------
# Samplers. Each returns a view into an index buffer it owns, so a step allocates no index array.


class _Sampler:
    def __init__(self, y, batch_size, *, seed, drop_last):
        self.n = len(y)
        if self.n == 0:
            raise DataError("cannot sample from an empty training split")
        self.batch_size = self._check(batch_size)
        self.drop_last = bool(drop_last)
        self.examples_seen = 0  # indices handed out so far
        self.steps = 0
        self._rng = np.random.default_rng(seed)

    def _check(self, batch_size) -> int:
        return _int_in(batch_size, 1, self.n, "batch size (at most the training split)")

    @property
    def epoch(self) -> float:
        """Training progress in epochs: examples seen / training-set size."""
        return self.examples_seen / self.n

    def next_batch(self, batch_size=None) -> np.ndarray:
        """Row indices (int64) of the next batch; batch_size overrides the current one from now on.

        The array is a view into the sampler's own buffer, valid until the next call: copy it to keep it."""
        if batch_size is not None:
            self.batch_size = self._check(batch_size)
        batch = self._next(self.batch_size)
        self.examples_seen += len(batch)
        self.steps += 1
        return batch

    def __repr__(self):
        return f"{type(self).__name__}(n={self.n}, batch_size={self.batch_size}, epoch={self.epoch:.3f})"


class ShuffleSampler(_Sampler):
    """Epochs without replacement: every example once per epoch, in a new random order each epoch.

    When fewer than B examples are left in an epoch, drop_last=True skips them and starts the next epoch (they
    are seen in later epochs, in other positions); drop_last=False returns them as one smaller batch."""

    def __init__(self, y, batch_size, *, seed, drop_last):
        super().__init__(y, batch_size, seed=seed, drop_last=drop_last)
        self._perm = np.arange(self.n, dtype=np.int64)
        self._rng.shuffle(self._perm)
        self._pos = 0
        self._epochs_done = 0

    @property
    def epoch(self) -> float:
        """Completed epochs plus the fraction of the current one (a dropped remainder ends its epoch)."""
        return self._epochs_done + self._pos / self.n

    def _next(self, B):
        left = self.n - self._pos
        if left == 0 or (left < B and self.drop_last):
            self._rng.shuffle(self._perm)  # in place: the previous batch view changes, as documented
            self._pos, self._epochs_done = 0, self._epochs_done + 1
        start = self._pos
        self._pos = min(self.n, start + B)
        return self._perm[start:self._pos]


class ReplacementSampler(_Sampler):
    """I.i.d. draws with replacement: every batch is full, so drop_last has no effect."""

    def __init__(self, y, batch_size, *, seed, drop_last):
        super().__init__(y, batch_size, seed=seed, drop_last=drop_last)
        self._u = np.empty(self.n)
        self._buf = np.empty(self.n, dtype=np.int64)

    def _next(self, B):
        u, idx = self._u[:B], self._buf[:B]
        self._rng.random(out=u)  # floor(u * n) fills the preallocated buffer; rng.integers would allocate
        u *= self.n
        np.copyto(idx, u, casting="unsafe")
        np.minimum(idx, self.n - 1, out=idx)  # u * n can round up to n
        return idx


class StratifiedSampler(_Sampler):
    """Batches whose class mix matches the training set's: class c gets floor(B p_c) or that plus one.

    Largest-remainder rounding gives the spare slots to the classes furthest behind their share of all examples
    drawn so far, so no class drifts ahead over many batches. Each class is a shuffled queue that reshuffles
    when it runs out; batches are always full, so drop_last has no effect, and epoch = examples seen / n."""

    def __init__(self, y, batch_size, *, seed, drop_last):
        super().__init__(y, batch_size, seed=seed, drop_last=drop_last)
        y = np.asarray(y)
        classes = np.unique(y)
        self._queues = [np.flatnonzero(y == c).astype(np.int64) for c in classes]
        for q in self._queues:
            self._rng.shuffle(q)
        self._pos = np.zeros(len(classes), dtype=np.int64)
        self._p = np.array([len(q) for q in self._queues]) / self.n
        self._taken = np.zeros(len(classes))
        self._buf = np.empty(self.n, dtype=np.int64)

    def class_counts(self, B: int) -> np.ndarray:
        """How many examples of each class the next batch of size B takes."""
        counts = np.floor(self._p * B)
        owed = self._p * (self.examples_seen + B) - self._taken - counts
        counts[np.argsort(-owed, kind="stable")[:B - int(counts.sum())]] += 1
        return counts.astype(np.int64)

    def _next(self, B):
        counts = self.class_counts(B)
        self._taken += counts
        out = 0
        for c, k in enumerate(counts):
            q = self._queues[c]
            while k:
                if self._pos[c] == len(q):
                    self._rng.shuffle(q)
                    self._pos[c] = 0
                m = min(k, len(q) - self._pos[c])
                self._buf[out:out + m] = q[self._pos[c]:self._pos[c] + m]
                self._pos[c] += m
                out, k = out + m, k - m
        batch = self._buf[:B]
        self._rng.shuffle(batch)  # so that any prefix of a batch is a random sample too
        return batch


_SAMPLER_CLASSES = {"shuffle": ShuffleSampler, "replacement": ReplacementSampler, "stratified": StratifiedSampler}


def make_sampler(kind: str, y, batch_size: int, *, seed: int, drop_last: bool):
    """A batch sampler over the rows of a training split with labels y; kind is one of SAMPLERS."""
    if kind not in _SAMPLER_CLASSES:
        raise DataError(f"unknown sampler {kind!r}; choose one of {', '.join(SAMPLERS)}")
    return _SAMPLER_CLASSES[kind](y, batch_size, seed=seed, drop_last=drop_last)

