"""`minigrad report STUDY --html`: one self-contained page built from the analysis object's fields."""
import base64
import dataclasses
import re

import pytest
from click.testing import CliRunner

from minigrad import store
from minigrad.study import html as report_html
from minigrad.study import report
from minigrad.study.config import make_config
from minigrad.cli import main
from tests.test_bad_input import SMALL_TOML, _fake_study


def embedded_pngs(page):
    """The images of a page, decoded: each must be a data: URI holding a PNG."""
    sources = re.findall(r"<img [^>]*src='([^']*)'", page)
    out = []
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:40]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        out.append(raw)
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    import tomllib

    d = tmp_path_factory.mktemp("html")
    _fake_study(d / "s.h5", make_config(**tomllib.loads(SMALL_TOML)))
    return d


def test_report_html_is_one_self_contained_page(made):
    result = CliRunner().invoke(main, ["report", str(made / "s.h5"), "--html"])
    assert result.exit_code == 0, result.output
    page = (made / "s.html").read_text()
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere
    figures = sorted(made.glob("s_*.png"))
    assert len(figures) == 6
    assert sorted(embedded_pngs(page)) == sorted(p.read_bytes() for p in figures)  # every figure, inline
    a = report.analyse(store.open(made / "s.h5"))
    assert report.recommendation_sentence(a).split(":")[0] in page  # the answer
    assert "minigrad train" in page and f"--batch-size {a.recommended['batch_size']}" in page  # its recipe
    for key in ("budget_factor", "reference_lrs", "host", "numpy_version"):  # configuration and machine
        assert key in page
    assert page.count("<tr") >= len(a.rows) + 1


def test_a_field_added_to_the_analysis_appears_without_a_change(made):
    a = report.analyse(store.open(made / "s.h5"))
    Extended = dataclasses.make_dataclass("Extended", [("tie_set", dict, dataclasses.field(default_factory=dict))],
                                          bases=(report.Analysis,))
    extended = Extended(**{f.name: getattr(a, f.name) for f in dataclasses.fields(a)},
                        tie_set={"batch_sizes": [4, 16], "win_share": 0.62})
    page = report_html.render(extended, store.open(made / "s.h5"), [])
    assert "tie_set" in page and "win_share" in page and "0.62" in page


def test_negative_control_a_page_with_a_linked_or_broken_image_is_caught():
    with pytest.raises(AssertionError):
        embedded_pngs("<img alt='x' src='https://example.org/a.png'>")
    with pytest.raises(Exception):
        embedded_pngs("<img alt='x' src='data:image/png;base64,not-base64!'>")
