"""Each optimizer kernel against the textbook update written in NumPy."""
import numpy as np
import pytest

from minigrad import MLP, make_optimizer


def textbook(name, p, grads, lr, mu=0.9, b2=0.999, eps=1e-8, wd=0.01):
    p, state = p.copy(), {"v": np.zeros_like(p), "m": np.zeros_like(p), "s": np.zeros_like(p)}
    for t, g in enumerate(grads, start=1):
        if name == "sgd":
            p -= lr * (g + wd * p)
        elif name == "momentum":
            state["v"] = mu * state["v"] + g + wd * p
            p -= lr * state["v"]
        elif name == "nesterov":
            gg = g + wd * p
            state["v"] = mu * state["v"] + gg
            p -= lr * (gg + mu * state["v"])
        else:
            state["m"] = mu * state["m"] + (1 - mu) * g
            state["s"] = b2 * state["s"] + (1 - b2) * g * g
            mhat, shat = state["m"] / (1 - mu**t), state["s"] / (1 - b2**t)
            p -= lr * (mhat / (np.sqrt(shat) + eps) + wd * p)
    return p


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam"])
def test_optimizer_matches_textbook_update(name):
    model = MLP([4, 5, 3], dtype=np.float64, seed=0)
    start = model.params.copy()
    r = np.random.default_rng(0)
    grads = [r.standard_normal(model.n_params) for _ in range(5)]
    opt = make_optimizer(name, 0.05, weight_decay=0.01)
    for g in grads:
        model.grads[...] = g
        opt.step(model)
    np.testing.assert_allclose(model.params, textbook(name, start, grads, 0.05), rtol=1e-12, atol=1e-14)
    assert opt.steps == 5


def test_momentum_differs_from_sgd():
    # negative control for the comparison above: a different update rule must not match
    model = MLP([4, 5, 3], dtype=np.float64, seed=0)
    start = model.params.copy()
    grads = [np.random.default_rng(i).standard_normal(model.n_params) for i in range(3)]
    opt = make_optimizer("momentum", 0.05, weight_decay=0.01)
    for g in grads:
        model.grads[...] = g
        opt.step(model)
    assert not np.allclose(model.params, textbook("sgd", start, grads, 0.05))


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="rmsprop", lr=0.1), "unknown optimizer"),
    (dict(name="sgd", lr=0.0), "learning rate"),
    (dict(name="sgd", lr=-1.0), "learning rate"),
    (dict(name="momentum", lr=0.1, momentum=1.0), "momentum"),
])
def test_bad_optimizer_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(**kwargs)


def test_learning_rate_can_be_changed_between_steps():
    opt = make_optimizer("sgd", 0.1)
    opt.lr = 0.025
    assert opt.lr == 0.025 and opt.hyper[0] == 0.025
