"""The samplers of the compiled training loop, as arrays, on a SplitMix64 generator of their own (so the state is an
array a snapshot copies): the contract of minigrad.data's samplers.

    shuffle      every example once per epoch in a new random order; drop_last skips a remainder smaller than B,
                 keep-last (drop_last=False) returns it as one smaller batch; epoch = epochs done + position / n
    replacement  B i.i.d. uniform draws per batch; epoch = examples seen / n
    stratified   class counts by largest remainder against the class shares (data.StratifiedSampler.class_counts),
                 each class a shuffled queue, the batch shuffled; epoch = examples seen / n
Same seed: bitwise the same draws.

Legend: B = batch size (rows of the batch), n = training examples, k = classes.
"""
import numpy as np
from numba import njit

SHUFFLE, REPLACEMENT, STRATIFIED = 0, 1, 2
SAMPLER_KINDS = {"shuffle": SHUFFLE, "replacement": REPLACEMENT, "stratified": STRATIFIED}
# sampler state st (int64): kind, position in the epoch (shuffle), epochs done (shuffle), examples seen, drop_last
KIND, POS, EPOCHS, SEEN, DROP_LAST = range(5)


# ------------------------------------------------------------------------------------------ random numbers
@njit(cache=True)
def next_u64(rng):
    # SplitMix64 (Steele, Lea, Flood 2014): rng (1,) uint64 is the whole state
    s = rng[0] + np.uint64(0x9E3779B97F4A7C15)
    rng[0] = s
    z = (s ^ (s >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def random_below(rng, n):
    # an integer in [0, n) from the top 53 bits (bias below 2^-53 * n: immaterial for n up to millions)
    u = (next_u64(rng) >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    return min(np.int64(u * n), n - 1)


@njit(cache=True)
def shuffle(rng, a, lo, hi):
    # Fisher-Yates on a[lo:hi] in place
    for i in range(hi - lo - 1, 0, -1):
        j = random_below(rng, i + 1)
        a[lo + i], a[lo + j] = a[lo + j], a[lo + i]


# ------------------------------------------------------------------------------------------------ samplers
@njit(cache=True)
def sampler_epoch(st, n):
    if st[KIND] == SHUFFLE:
        return st[EPOCHS] + st[POS] / n
    return st[SEEN] / n


@njit(cache=True)
def batch_rows(st, n, B):
    # rows of the next batch of nominal size B: B, or the kept remainder of a shuffle epoch
    if st[KIND] != SHUFFLE:
        return B
    left = n - st[POS]
    if left == 0 or (left < B and st[DROP_LAST]):
        return B
    return min(B, left)


@njit(cache=True)
def class_counts(p, taken, seen, B):
    # p (k,) class shares, taken (k,) examples drawn per class -> counts (k,): floor(B p_c), the spare slots to the
    # classes furthest behind their share (largest remainder, ties to the lower class: a stable sort)
    counts = np.floor(p * B)
    owed = p * (seen + B) - taken - counts
    order = np.argsort(-owed, kind="mergesort")
    spare = B - np.int64(counts.sum())
    for i in range(spare):
        counts[order[i]] += 1
    return counts.astype(np.int64)


@njit(cache=True)
def draw(st, rng, order, bounds, qpos, p, taken, idx, n, B):
    # the next batch of nominal size B: its row numbers in idx[:rows]; returns rows
    kind = st[KIND]
    if kind == SHUFFLE:
        left = n - st[POS]
        if left == 0 or (left < B and st[DROP_LAST]):
            shuffle(rng, order, 0, n)
            st[POS] = 0
            st[EPOCHS] += 1
        start = st[POS]
        stop = min(n, start + B)
        for i in range(stop - start):
            idx[i] = order[start + i]
        st[POS] = stop
        rows = stop - start
    elif kind == REPLACEMENT:
        for i in range(B):
            idx[i] = random_below(rng, n)
        rows = B
    else:
        counts = class_counts(p, taken, st[SEEN], B)
        out = 0
        for c in range(counts.shape[0]):
            taken[c] += counts[c]
            lo, hi = bounds[c], bounds[c + 1]
            for _ in range(counts[c]):
                if qpos[c] == hi - lo:
                    shuffle(rng, order, lo, hi)
                    qpos[c] = 0
                idx[out] = order[lo + qpos[c]]
                qpos[c] += 1
                out += 1
        shuffle(rng, idx, 0, B)  # so that any prefix of a batch is a random sample too
        rows = B
    st[SEEN] += rows
    return rows


class SamplerState:
    """A sampler as arrays (see the module docstring): what run_steps draws from, and what a snapshot copies."""

    MUTABLE = ("st", "rng", "order", "qpos", "taken")

    def __init__(self, kind, y, *, seed, drop_last):
        if kind not in SAMPLER_KINDS:
            raise ValueError(f"unknown sampler {kind!r}; choose one of {', '.join(SAMPLER_KINDS)}")
        y = np.asarray(y)
        self.n = n = len(y)
        if n == 0:
            raise ValueError("cannot sample from an empty training split")
        self.st = np.zeros(5, np.int64)
        self.st[KIND], self.st[DROP_LAST] = SAMPLER_KINDS[kind], bool(drop_last)
        self.rng = np.random.SeedSequence(seed).generate_state(1, np.uint64)
        self.idx = np.zeros(n, np.int64)
        if self.st[KIND] == STRATIFIED:
            classes = np.unique(y)
            self.order = np.concatenate([np.flatnonzero(y == c) for c in classes]).astype(np.int64)
            sizes = np.array([np.count_nonzero(y == c) for c in classes], np.int64)
            self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            for c in range(len(classes)):
                shuffle(self.rng, self.order, self.bounds[c], self.bounds[c + 1])
            self.p = sizes / n
        else:
            self.order = np.arange(n, dtype=np.int64)
            self.bounds = np.array([0, n], np.int64)
            self.p = np.ones(1)
            if self.st[KIND] == SHUFFLE:
                shuffle(self.rng, self.order, 0, n)
        self.qpos = np.zeros(len(self.p), np.int64)
        self.taken = np.zeros(len(self.p))

    @property
    def epoch(self):
        return float(sampler_epoch(self.st, self.n))

    def arrays(self):
        return self.st, self.rng, self.order, self.bounds, self.qpos, self.p, self.taken, self.idx

    def next_batch(self, B):
        """Row numbers of the next batch of nominal size B (a copy): the sampler on its own, for tests and tools."""
        rows = draw(*self.arrays(), self.n, B)
        return self.idx[:rows].copy()
