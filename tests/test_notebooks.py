"""The notebooks in examples/ run from top to bottom in a fresh kernel, in a scratch folder, and show what they
promise: the quick study's answer card and figures inline; the kernel walk-through's checks all pass."""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name, tmp_path):
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def outputs(nb, kind):
    return [o.get("data", {}).get(kind) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if kind in o.get("data", {})]


@pytest.mark.slow
def test_the_quick_study_notebook_runs_and_shows_its_answer(tmp_path):
    nb = run("quick_study.ipynb", tmp_path)
    assert any("Use batch size" in html and "minigrad train" in html for html in outputs(nb, "text/html"))
    assert len(outputs(nb, "image/png")) >= 3  # two study figures and the traces plot, inline
    assert (tmp_path / "notebook-study.h5").exists()


def test_the_one_step_notebook_checks_every_kernel(tmp_path):
    nb = run("one_step.ipynb", tmp_path)
    text = " ".join(t for t in outputs(nb, "text/plain"))
    assert "the model's step equals the kernels' step" in text and "central differences agree" in text


def test_negative_control_a_failing_cell_fails_the_run(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("assert 1 + 1 == 3, 'wrong sum'")])
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    global EXAMPLES
    saved, EXAMPLES = EXAMPLES, tmp_path
    try:
        with pytest.raises(nbclient.exceptions.CellExecutionError, match="wrong sum"):
            run("bad.ipynb", tmp_path)
    finally:
        EXAMPLES = saved
