"""The step registry (engine/steps.py): one object per path, the one rule that picks it, and the path table that is
generated from it into docs/architecture.md and `minigrad bench throughput --help`."""
import inspect
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from minigrad import MLP, make_optimizer
from minigrad.cli import main
from minigrad.engine import kernels as K
from minigrad.engine import steps as S
from minigrad.study.config import DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "architecture.md"


def test_the_docs_hold_the_table_the_registry_renders():
    text = DOCS.read_text()
    assert S.HEADING in text
    assert S.with_docs_section(text) == text, "run: python -m minigrad.engine.steps docs/architecture.md"
    assert S.table() in text


def test_a_changed_threshold_is_caught_by_the_docs_check(monkeypatch):
    # negative control: the registry at another threshold no longer matches the file
    text = DOCS.read_text()
    monkeypatch.setattr(S, "SMALL_BATCH_MAX", S.SMALL_BATCH_MAX + 1)
    assert S.with_docs_section(text) != text and S.table() not in text


def test_the_docs_section_is_replaced_in_place():
    text = f"# A\n\nintro\n\n{S.HEADING}\n\nold table\n\n## Next\n\nkept\n"
    out = S.with_docs_section(text)
    assert out.startswith("# A\n\nintro\n\n") and out.endswith("\n## Next\n\nkept\n") and "old table" not in out
    assert S.with_docs_section(out) == out


def test_every_path_is_in_the_table_and_reachable_by_the_rule(monkeypatch):
    table = S.table()
    assert [line.split("`")[1] for line in table.splitlines()[2:]] == list(S.paths())
    monkeypatch.setattr(S, "FUSED_SGD_MAX", {1: 16, 2: 32})  # so that the serial fused step is chosen somewhere
    chosen = {S.choose(backend, n, B, kind, T) for backend in S.BACKENDS for n in (10, S.FUSED_SGD_MIN_PARAMS)
              for B in (1, S.SMALL_BATCH_MAX + 1, 64) for kind in (None, 0, 3) for T in (1, 2)}
    assert chosen | set(S.MEASURED_ONLY) == set(S.paths()) and not chosen & set(S.MEASURED_ONLY)


def test_step_for_is_cached_per_batch_size_and_follows_the_thresholds(monkeypatch):
    model = MLP([6, 8, 3], seed=0)
    step = model.step_for(16, "sgd", threads=1)
    assert step is model.step_for(16, "sgd", threads=1) and step.name == "blas-fused-sgd" and step.B == 16
    assert model.step_for(16, "adam").name == "blas" and model.step_for(4, None).name == "blas-small"
    monkeypatch.setattr(S, "FUSED_SGD_MAX", {1: 32, 2: 32})
    monkeypatch.setattr(S, "FUSED_SGD_MIN_PARAMS", 0)
    assert model.step_for(16, "sgd", threads=1).name == "fused-sgd-serial"


def test_every_step_body_takes_at_most_nine_arguments():
    # the step bodies take the model's arrays as named tuples (kernels.Net, Grads, Work, Update and each path's
    # buffers); nine is the plain train step's: two kernels, net, grads, work, X, y, sqnorms, update
    from minigrad.engine import kernels_large as KG
    from minigrad.engine import kernels_small as KS
    from minigrad.engine import passes as P

    bodies = [P.forward, P.forward_backward, P.train_step, P.forward_backward_per_example, P.train_step_per_example,
              KS.sgd_step_serial, KS.sgd_step_parallel, KG.sgd_step]
    for body in bodies:
        assert len(inspect.signature(body.py_func).parameters) <= 9, body


def test_the_default_studys_step_is_the_one_kernels_py_names():
    # a reader told to start at kernels.py finds the step the default study runs: kernels.py's docstring names the
    # path and its kernel, and that is the path every batch size of the default study takes, on 1 or 2 threads
    sizes = [32, *DEFAULT_CONFIG["hidden"], 10]  # the teacher task: 32 features, 10 classes
    model = MLP(sizes, seed=0)
    names = {model.step_for(B, DEFAULT_CONFIG["optimizer"], threads=T).name
             for B in DEFAULT_CONFIG["batch_sizes"] for T in (1, 2)}
    assert names == {"blas-fused-sgd"}
    kernel = S.paths()["blas-fused-sgd"].kernels.split(":")[0]
    assert kernel == "kernels_large.sgd_step"
    assert f"the path blas-fused-sgd, whose step is {kernel}" in " ".join(K.__doc__.split())
    # negative control: a model past the fused threshold on two threads takes another path at B = 1
    big = MLP([784, 256, 256, 10], seed=0)
    if S.fused_workers(2) == 2:
        assert big.step_for(1, "sgd", threads=2).name == "fused-sgd-parallel"


def test_throughput_help_shows_the_table():
    out = CliRunner().invoke(main, ["bench", "throughput", "--help"]).output
    for name, path in S.paths().items():
        assert name in out and " ".join(path.when.split()[:3]) in " ".join(out.split())


def test_a_fused_step_settles_the_gradient_of_its_last_batch():
    # the Step object owns the deferral: after its step, grads is formed on first read and equals the plain
    # gradient of the same batch at the parameters before the update
    sizes, B = [12, 30, 8, 3], 16
    r = np.random.default_rng(0)
    X, y = r.standard_normal((B, sizes[0])), r.integers(0, 3, B)
    model, plain = MLP(sizes, dtype=np.float64, seed=0), MLP(sizes, dtype=np.float64, backend="loops", seed=0)
    plain.loss_and_grad(X, y)
    model.train_step(X, y, make_optimizer("sgd", 0.1))
    assert model.grads_deferred and model.step_for(B, "sgd").defers_grads
    np.testing.assert_allclose(model.grads, plain.grads, rtol=1e-10, atol=1e-12)
    assert not model.grads_deferred
