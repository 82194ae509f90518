"""Fixtures shared by the test modules."""
import os

import numpy as np
import pytest

from minigrad import data

# the step paths of the thresholds only: a machine's kept timings (engine/step_choice.py) must not change what the
# tests run; tests/test_step_choice.py points it at a folder of its own
os.environ["MINIGRAD_STEP_CHOICES"] = "off"


def make_blobs(seed=0, spread=3.0, n_train=600, n_val=300, n_test=300, features=6, classes=3):
    """Well separated Gaussian blobs as a Dataset: learnable to ~0 error in a few hundred steps."""
    r = np.random.default_rng(seed)
    centres = r.standard_normal((classes, features)) * spread

    def split(n):
        y = r.integers(0, classes, n)
        return (centres[y] + r.standard_normal((n, features))).astype(np.float32), y.astype(np.int64)

    (Xt, yt), (Xv, yv), (Xs, ys) = split(n_train), split(n_val), split(n_test)
    return data.Dataset(name="blobs", X_train=Xt, y_train=yt, X_val=Xv, y_val=yv, X_test=Xs, y_test=ys,
                        n_classes=classes, info={})


@pytest.fixture(scope="module")
def blobs():
    """Three Gaussian blobs, 6 features, 600/300/300 examples."""
    return make_blobs()
