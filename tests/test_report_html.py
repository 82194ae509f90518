"""`minigrad report STUDY --html`: one self-contained page for a reader, rendered from the study's Answer."""
import base64
import html
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
    assert {p.stem.split("_", 1)[1] for p in figures} >= {"steps", "throughput", "time", "lr", "curves", "heatmap"}
    assert sorted(embedded_pngs(page)) == sorted(p.read_bytes() for p in figures)  # every figure, inline
    answer = report.of(report.analyse(store.open(made / "s.h5")))
    text = html.unescape(page)
    assert answer.sentence in text and answer.recipe in text  # the answer and its recipe, as the terminal says them
    for label in ("budget factor", "reference lrs", "host", "NumPy"):  # configuration and machine
        assert label in text
    assert page.count("<tr") >= len(answer.rows) + 1


def raw_values(page):
    """What a reader should never see: Python or JSON containers printed as text, and settings with no value."""
    text = html.unescape(re.sub(r"<style>.*?</style>|<[^>]+>", " ", page, flags=re.S))
    return re.findall(r"[{\[]['\"]|\b(?:None|nan|NaN|True|False)\b|\w+_note\b|: *$", text, flags=re.M)


def test_the_page_shows_no_raw_dicts_or_empty_keys(made):
    page = report_html.render(report.of(report.analyse(store.open(made / "s.h5"))), store.open(made / "s.h5"), [])
    assert raw_values(page) == []
    for heading in ("intervals", "wins", "tied", "Fit S(B)", "Configuration", "Machine"):
        assert heading in page


def test_negative_control_a_raw_dict_on_the_page_is_caught():
    assert raw_values("<td>{'1': 0.0, '2': 0.0}</td>") and raw_values("<td>B_crit_note</td>")
    assert raw_values("<td>nan</td>") and not raw_values("<td>0.0 to 1.0</td>")


def test_negative_control_a_page_with_a_linked_or_broken_image_is_caught():
    with pytest.raises(AssertionError):
        embedded_pngs("<img alt='x' src='https://example.org/a.png'>")
    with pytest.raises(Exception):
        embedded_pngs("<img alt='x' src='data:image/png;base64,not-base64!'>")
