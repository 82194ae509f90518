"""The timed batches: one source for every path of a throughput run and for the frameworks it is compared with."""


def make_batches(sizes, batch_sizes, dtype, seed=0):
    """{B: (X (B, sizes[0]) standard-normal of `dtype`, y (B,) int64 uniform labels)}, drawn in the order of
    batch_sizes from one generator: every path timed in a run (and the frameworks of --compare) gets these."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {B: (rng.standard_normal((B, sizes[0])).astype(dtype), rng.integers(0, sizes[-1], B))
            for B in batch_sizes}
