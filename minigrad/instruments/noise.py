"""Gradient noise: the simple noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, appendix A) and the
spread of minibatch gradients around the full gradient.

Notation: g_i the gradient of example i's own loss, G = E g_i the true gradient, Sigma = Cov(g_i) the per-example
covariance, G_B = (1/B) sum_{i in batch} g_i a minibatch gradient. Then E|G_B|^2 = |G|^2 + tr(Sigma)/B.

From one batch of B examples drawn with replacement, with per-example squared norms |g_i|^2 (one cheap extra pass in
the dense backward: |dW_i|^2 = |delta_i|^2 |a_i|^2, see kernels.linear_grad_sqnorms) and the batch mean gbar:

    |G|^2     ~ (B |gbar|^2 - mean_i |g_i|^2) / (B - 1)          both unbiased
    tr(Sigma) ~ B / (B - 1) * (mean_i |g_i|^2 - |gbar|^2)

Each is smoothed with its own moving average and only then divided (a ratio of unbiased estimates is biased).
Drawn without replacement from n examples, E|G_B - G|^2 = tr(Sigma) / B * (n - B) / (n - 1) (finite population).

GNSHook is the training-time instrument: an eval hook for minigrad.training.train.train() that, at each evaluation, measures a
fresh sample of training examples at the current parameters and records gns_g2, gns_trsigma (this evaluation's
unbiased estimates), gns_b_simple (ratio of their moving averages) and gns_s (seconds it spent). It draws from its
own random stream and puts model.grads back, so the training run is bit-for-bit the one without it.
full_gradient_stats() is the exact measurement over a whole data split; FullNoiseHook takes it at checkpoints
during training (and where the validation error first reaches a target).
noise_vs_batch() is the core of `minigrad experiment noise`.
"""
import math
import time

import numpy as np


# ------------------------------------------------------------------------------------------------ estimators
def batch_estimates(sqnorms, mean_grad_sqnorm):
    """(|G|^2, tr(Sigma)) estimated from one batch: per-example squared gradient norms |g_i|^2 (B,) and the squared
    norm of the batch's mean gradient |gbar|^2. Unbiased when the B examples are i.i.d. draws; needs B >= 2.
    (NaN, NaN) when a norm is not finite: at a rate that is blowing up there is no noise scale to estimate."""
    sqnorms = np.asarray(sqnorms, np.float64)
    B = sqnorms.shape[0]
    if B < 2:
        raise ValueError(f"the per-example estimators need a batch of at least 2 examples, got {B}")
    if not (np.isfinite(sqnorms).all() and math.isfinite(mean_grad_sqnorm)):
        return math.nan, math.nan
    with np.errstate(over="ignore"):  # a sum of finite norms past float64: the same case
        mean_sq = float(sqnorms.mean())
    if not math.isfinite(mean_sq):
        return math.nan, math.nan
    g2 = (B * mean_grad_sqnorm - mean_sq) / (B - 1)
    trsigma = B / (B - 1) * (mean_sq - mean_grad_sqnorm)
    return g2, trsigma


def two_batch_estimates(small_sqnorm, b_small, big_sqnorm, b_big):
    """(|G|^2, tr(Sigma)) from |G_Bs|^2 and |G_Bb|^2, the squared norms of two minibatch gradients at batch sizes
    Bs < Bb (McCandlish et al., eqs. A.2-A.3): the data-parallel form, where per-example norms are not at hand."""
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < small batch < big batch, got {b_small} and {b_big}")
    g2 = (b_big * big_sqnorm - b_small * small_sqnorm) / (b_big - b_small)
    trsigma = (small_sqnorm - big_sqnorm) / (1.0 / b_small - 1.0 / b_big)
    return g2, trsigma


def b_simple(g2, trsigma):
    """tr(Sigma) / |G|^2; NaN where the |G|^2 estimate is not positive (the noise swamps the signal)."""
    return trsigma / g2 if g2 > 0 else math.nan


class EMA:
    """Exponential moving average that starts at its first value: m <- (1 - w) m + w x."""

    def __init__(self, weight):
        if not 0 < weight <= 1:
            raise ValueError(f"moving-average weight must lie in (0, 1], got {weight}")
        self.weight, self.value = weight, None

    def update(self, x):
        self.value = x if self.value is None else (1 - self.weight) * self.value + self.weight * x
        return self.value


def _sqnorm(v):
    v = np.asarray(v, np.float64)
    if not np.isfinite(v).all():
        return math.nan
    return float(np.dot(v, v))


def sample_estimates(model, X, y, idx):
    """(|G|^2, tr(Sigma)) from the examples X[idx] at the model's current parameters (overwrites model.grads)."""
    xb = np.ascontiguousarray(X[idx])
    yb = np.ascontiguousarray(y[idx])
    sq = np.empty(len(idx), np.float64)  # float64 whatever the model's dtype: see MLP._loss_and_grad
    model.loss_and_grad(xb, yb, sq)
    return batch_estimates(sq, _sqnorm(model.grads))


def warm_up(model, data, rows, sqnorms):
    """Compiles what loss_and_grad on `rows` training examples needs (with per-example norms or without), on a copy
    of the model: the hooks call it before training, so that their first evaluation's compile counts as the run's
    compile_s, not as evaluation time. Touches neither the model nor any random stream."""
    n = min(rows, len(data.y_train))
    X = np.ascontiguousarray(data.X_train[:n], dtype=model.dtype)
    model.copy().loss_and_grad(X, np.ascontiguousarray(data.y_train[:n]),
                               np.empty(n, np.float64) if sqnorms else None)


# -------------------------------------------------------------------------------------------- the eval hook
class GNSHook:
    """Eval hook for train(): B_simple at every evaluation from `batches` batches of `batch_size` training examples
    drawn with replacement (its own random stream), smoothed over evaluations with weight `smoothing`.

    Columns: gns_g2, gns_trsigma (this evaluation's unbiased estimates, averaged over its batches), gns_b_simple
    (the ratio of their moving averages), gns_s (seconds spent, for the overhead)."""

    def __init__(self, batch_size=256, batches=2, smoothing=0.25, seed=0):
        if batch_size < 2 or batches < 1:
            raise ValueError(f"the GNS hook needs batch_size >= 2 and batches >= 1, got {batch_size} and {batches}")
        self.batch_size, self.batches, self.seed = int(batch_size), int(batches), seed
        self._g2, self._tr = EMA(smoothing), EMA(smoothing)
        self._rng = np.random.default_rng([seed, 0x6E5])
        self._X = None

    def warm_up(self, model, data):
        warm_up(model, data, self.batch_size, sqnorms=True)

    def __call__(self, model, data, step):
        started = time.perf_counter()
        if self._X is None or self._X.dtype != model.dtype:
            self._X = data.X_train.astype(model.dtype, copy=False)
        saved = model.grads.copy()  # the training loop's last gradient (its grad_norm column) stays as it was
        n = len(data.y_train)
        g2s, trs = [], []
        for _ in range(self.batches):
            idx = self._rng.integers(0, n, self.batch_size)
            g2, tr = sample_estimates(model, self._X, data.y_train, idx)
            g2s.append(g2)
            trs.append(tr)
        model.grads[...] = saved
        g2, tr = float(np.mean(g2s)), float(np.mean(trs))
        if not (math.isfinite(g2) and math.isfinite(tr)):  # a blowing-up step: NaN here, the averages kept
            return {"gns_g2": g2, "gns_trsigma": tr, "gns_b_simple": math.nan,
                    "gns_s": time.perf_counter() - started}
        smooth_g2, smooth_tr = self._g2.update(g2), self._tr.update(tr)
        return {"gns_g2": g2, "gns_trsigma": tr, "gns_b_simple": b_simple(smooth_g2, smooth_tr),
                "gns_s": time.perf_counter() - started}


class TwoBatchHook:
    """Eval hook for train(): B_simple pooled as McCandlish et al. (appendix A) pool it in data-parallel training:
    at each evaluation |G_Bs|^2 and |G_Bb|^2 from a fresh batch of `big` training examples (with replacement) and
    its first `small` examples, turned into unbiased |G|^2 and tr(Sigma) by the two-batch estimator
    (two_batch_estimates), each averaged over the last `window` evaluations, and only then divided.

    Columns: tb_g2, tb_trsigma (this evaluation's estimates), tb_b_simple (ratio of the windowed means)."""

    def __init__(self, small=32, big=1024, window=8, seed=0):
        if not 1 <= small < big or window < 1:
            raise ValueError(f"the two-batch hook needs 1 <= small < big and window >= 1, got {small}, {big}, "
                             f"{window}")
        self.small, self.big, self.window = int(small), int(big), int(window)
        self._rng = np.random.default_rng([seed, 0x7B5])
        self._g2, self._tr, self._X = [], [], None

    def warm_up(self, model, data):
        for rows in (self.small, self.big):
            warm_up(model, data, rows, sqnorms=False)

    def __call__(self, model, data, step):
        if self._X is None or self._X.dtype != model.dtype:
            self._X = data.X_train.astype(model.dtype, copy=False)
        saved = model.grads.copy()
        idx = self._rng.integers(0, len(data.y_train), self.big)
        norms = []
        for part in (idx[:self.small], idx):
            model.loss_and_grad(np.ascontiguousarray(self._X[part]), np.ascontiguousarray(data.y_train[part]))
            norms.append(_sqnorm(model.grads))
        model.grads[...] = saved
        g2, tr = two_batch_estimates(norms[0], self.small, norms[1], self.big)
        self._g2, self._tr = (self._g2 + [g2])[-self.window:], (self._tr + [tr])[-self.window:]
        return {"tb_g2": g2, "tb_trsigma": tr, "tb_b_simple": b_simple(float(np.mean(self._g2)),
                                                                       float(np.mean(self._tr)))}


# ------------------------------------------------------------------------------------- full-data measurement
def full_gradient(model, X, y, chunk=2048):
    """(mean loss, the full-batch gradient G in float64, mean_i |g_i|^2) over every row of X, in chunks."""
    X = np.ascontiguousarray(X, dtype=model.dtype)
    n = X.shape[0]
    G = np.zeros(model.n_params)
    total_loss = total_sq = 0.0
    saved = model.grads.copy()
    for start in range(0, n, chunk):
        xb, yb = X[start:start + chunk], np.ascontiguousarray(y[start:start + chunk])
        sq = np.empty(xb.shape[0], np.float64)
        total_loss += model.loss_and_grad(xb, yb, sq) * xb.shape[0]
        G += model.grads.astype(np.float64) * (xb.shape[0] / n)
        total_sq += float(sq.sum())
    model.grads[...] = saved
    return total_loss / n, G, total_sq / n


def full_gradient_stats(model, X, y, chunk=2048):
    """Exact noise statistics over a whole data split (the examples as the population):
    |G|^2, tr(Sigma) = mean_i |g_i|^2 - |G|^2, B_simple, and the mean loss."""
    loss, G, mean_sq = full_gradient(model, X, y, chunk)
    g2 = _sqnorm(G)
    trsigma = mean_sq - g2
    return {"loss": loss, "g2": g2, "trsigma": trsigma, "b_simple": b_simple(g2, trsigma), "n": int(X.shape[0])}


class FullNoiseHook:
    """Eval hook: the exact B_simple over the whole training split at `count` checkpoints spaced geometrically in
    steps up to `total_steps`, and at the first evaluation whose validation error is at or below `target` (it
    evaluates the validation split itself, about as costly as the evaluation that train() just did).
    Columns full_g2, full_trsigma, full_b_simple, full_loss (mean training loss): NaN between checkpoints."""

    def __init__(self, count, total_steps, target=None):
        self.checkpoints = sorted(set(np.unique(np.geomspace(1, max(total_steps, 2), count).astype(int)).tolist()))
        self.target, self.reached = target, False

    def warm_up(self, model, data):
        warm_up(model, data, 2048, sqnorms=True)  # full_gradient's chunks

    def __call__(self, model, data, step):
        due = bool(self.checkpoints) and step >= self.checkpoints[0]
        while self.checkpoints and step >= self.checkpoints[0]:
            self.checkpoints.pop(0)
        at_target = False
        if self.target is not None and not self.reached:
            _, val_error = model.evaluate(data.X_val.astype(model.dtype, copy=False), data.y_val)
            at_target = self.reached = val_error <= self.target
        if not (due or at_target):
            return {"full_g2": math.nan, "full_trsigma": math.nan, "full_b_simple": math.nan, "full_loss": math.nan,
                    "at_target": 0.0}
        stats = full_gradient_stats(model, data.X_train, data.y_train)
        return {"full_g2": stats["g2"], "full_trsigma": stats["trsigma"], "full_b_simple": stats["b_simple"],
                "full_loss": stats["loss"], "at_target": float(at_target)}


# -------------------------------------------------------------------------- noise against batch size (core)
def minibatch_gradients(model, X, y, batch_size, draws, rng, replace=False):
    """Yield `draws` minibatch gradients (float64 copies), each batch drawn without replacement (as the training
    sampler does) or with replacement."""
    n = X.shape[0]
    for _ in range(draws):
        idx = rng.integers(0, n, batch_size) if replace else rng.choice(n, batch_size, replace=False)
        model.loss_and_grad(np.ascontiguousarray(X[idx]), np.ascontiguousarray(y[idx]))
        yield model.grads.astype(np.float64)


def step_time(model, X, y, batch_size, min_time=0.1, min_repeats=10, rng=None):
    """Median seconds of one train step (forward, backward, SGD update) at `batch_size`, on a copy of the model with
    a negligible learning rate, after a warm-up step."""
    from minigrad.engine.optim import make_optimizer

    rng = rng or np.random.default_rng(0)
    twin = model.copy()
    opt = make_optimizer("sgd", 1e-12)
    idx = rng.choice(X.shape[0], batch_size, replace=batch_size > X.shape[0])
    xb, yb = np.ascontiguousarray(X[idx], dtype=model.dtype), np.ascontiguousarray(y[idx])
    twin.train_step(xb, yb, opt)  # warm-up: JIT, workspace, caches
    times, spent = [], 0.0
    while len(times) < min_repeats or spent < min_time:
        started = time.perf_counter()
        twin.train_step_trusted(xb, yb, opt)
        times.append(time.perf_counter() - started)
        spent += times[-1]
    return float(np.median(times))


def fit_inverse_b(batch_sizes, values, errors=None):
    """Least squares of values = intercept + slope / B, each point weighted by 1/error (default: 1/value, i.e. in
    relative error, so that the small values at large B count as much as the large ones at small B).
    Returns (intercept, slope, largest relative residual)."""
    B = np.asarray(batch_sizes, float)
    v = np.asarray(values, float)
    w = 1.0 / (np.abs(v) if errors is None else np.asarray(errors, float))
    A = np.stack([np.ones_like(B), 1.0 / B], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(A * w[:, None], v * w, rcond=None)
    resid = np.abs(A @ np.array([intercept, slope]) - v) / np.abs(v)
    return float(intercept), float(slope), float(resid.max())


def noise_vs_batch(model, X, y, batch_sizes, draws=16, min_examples=8192, seed=0, time_steps=True, progress=None):
    """At the model's current parameters: for each B, the spread of minibatch gradients around the full gradient
    G, the mean |G_B|^2, and the step time t(B); plus the exact full-data statistics. Each B gets
    max(draws, min_examples / B) batches: per-example gradient norms are heavy-tailed (a few badly fitted examples
    carry much of tr(Sigma)), so small batches need many draws for a stable mean, and they cost almost nothing.

    Returns a dict of arrays (one entry per B): batch_size, draws, spread_rms = sqrt(mean |G_B - G|^2) and its
    standard error, predicted_rms = sqrt(tr(Sigma)/B * (n-B)/(n-1)), mean_sqnorm = mean |G_B|^2 and its standard
    error, step_time_s; and the scalars g2, trsigma, b_simple, loss, n of the full split."""
    X = np.ascontiguousarray(X, dtype=model.dtype)
    n = X.shape[0]
    batch_sizes = [int(B) for B in batch_sizes]
    if min(batch_sizes) < 1 or max(batch_sizes) > n:
        raise ValueError(f"batch sizes must lie between 1 and the {n} examples, got {batch_sizes}")
    rng = np.random.default_rng([seed, 0xB5])
    loss, G, mean_sq = full_gradient(model, X, y)
    g2 = _sqnorm(G)
    trsigma = mean_sq - g2
    saved = model.grads.copy()
    rows = {k: [] for k in ("batch_size", "draws", "spread_rms", "spread_se", "predicted_rms", "mean_sqnorm",
                            "sqnorm_se", "step_time_s")}
    for i, B in enumerate(batch_sizes):
        k = max(int(draws), int(math.ceil(min_examples / B)))
        dev, sq = np.empty(k), np.empty(k)
        for d, g in enumerate(minibatch_gradients(model, X, y, B, k, rng)):
            dev[d] = _sqnorm(g - G)
            sq[d] = _sqnorm(g)
        rows["batch_size"].append(B)
        rows["draws"].append(k)
        rows["spread_rms"].append(math.sqrt(dev.mean()))
        # delta method: se of sqrt(mean) = se(mean) / (2 sqrt(mean))
        rows["spread_se"].append(dev.std(ddof=1) / math.sqrt(k) / (2 * math.sqrt(dev.mean())) if k > 1
                                 else math.nan)
        rows["predicted_rms"].append(math.sqrt(max(trsigma, 0.0) / B * (n - B) / max(n - 1, 1)))
        rows["mean_sqnorm"].append(float(sq.mean()))
        rows["sqnorm_se"].append(sq.std(ddof=1) / math.sqrt(k) if k > 1 else math.nan)
        rows["step_time_s"].append(step_time(model, X, y, B, rng=rng) if time_steps else math.nan)
        if progress is not None:
            progress((i + 1) / len(batch_sizes))
    model.grads[...] = saved
    out = {k: np.asarray(v, np.int64 if k in ("batch_size", "draws") else np.float64) for k, v in rows.items()}
    out.update(g2=g2, trsigma=trsigma, b_simple=b_simple(g2, trsigma), loss=loss, n=n)
    return out


# ---------------------------------------------------------------------------------------- for the study report
def b_simple_near_target(traces, target, window=3):
    """B_simple where training runs first reached validation error `target`, from the GNSHook columns of their
    traces: the raw unbiased estimates of the last `window` evaluations up to and including that one, pooled over
    runs, then divided (the ratio of averages, not the average of ratios). Also the median over runs of their
    smoothed gns_b_simple at that evaluation. Runs without GNS columns or that missed the target are left out."""
    g2s, trs, smoothed = [], [], []
    for t in traces:
        if "gns_g2" not in t or target is None:
            continue
        hit = np.flatnonzero(np.asarray(t["val_error"]) <= target)
        if not len(hit):
            continue
        i = hit[0]
        lo = max(0, i - window + 1)
        g2, tr = np.asarray(t["gns_g2"][lo:i + 1], float), np.asarray(t["gns_trsigma"][lo:i + 1], float)
        ok = np.isfinite(g2) & np.isfinite(tr)
        g2s.extend(g2[ok])
        trs.extend(tr[ok])
        smoothed.append(float(t["gns_b_simple"][i]))
    if not g2s:
        return {}
    finite = [s for s in smoothed if math.isfinite(s)]
    return {"b_simple": b_simple(float(np.mean(g2s)), float(np.mean(trs))), "trials": len(smoothed),
            "median_smoothed": float(np.median(finite)) if finite else math.nan}
