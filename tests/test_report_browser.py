"""The study's HTML page in a real browser (headless Chromium driven by Playwright): it loads with no console errors,
every figure decodes, the recipe on the page is the terminal's, and at a phone's width nothing but the tables'
own scroll boxes is wider than the screen. Skipped, with the reason, where no Chromium is installed (Debian's
`chromium` package; .ci/run installs it)."""
import shutil

import pytest
from click.testing import CliRunner

from minigrad import api
from minigrad.cli import main

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt install chromium)")
# the closed network refuses Chromium's background connections; these flags keep it from trying
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    import tomllib

    from minigrad.study.config import make_config
    from tests.test_bad_input import SMALL_TOML, _fake_study

    d = tmp_path_factory.mktemp("browser")
    _fake_study(d / "s.h5", make_config(**tomllib.loads(SMALL_TOML)))
    result = CliRunner().invoke(main, ["report", str(d / "s.h5"), "--html"], terminal_width=120)
    assert result.exit_code == 0, result.output
    return d / "s.html", result.output


def visit(path, width, height, screenshot=None):
    """Load the page at a window size; return what the browser saw."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            seen = page.evaluate("""() => ({
                images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth})),
                recipe: (document.getElementById('recipe') || {}).textContent,
                overflow: document.documentElement.scrollWidth - window.innerWidth,
            })""")
            if screenshot:
                page.screenshot(path=str(screenshot), full_page=True)
            return dict(seen, errors=errors)
        finally:
            browser.close()


def test_the_page_loads_clean_with_every_figure_and_the_terminals_recipe(page_file, tmp_path):
    path, terminal = page_file
    seen = visit(path, 1280, 900, tmp_path / "desktop.png")
    assert seen["errors"] == []
    figures = list(path.parent.glob("s_*.png"))
    assert len(seen["images"]) == len(figures) >= 6 and all(i["complete"] and i["width"] > 0 for i in seen["images"])
    recipe = api.open_study(path.with_suffix(".h5")).answer().recipe
    assert seen["recipe"] == recipe and " ".join(recipe.split()) in " ".join(terminal.split())
    assert (tmp_path / "desktop.png").stat().st_size > 10_000


def test_at_a_phones_width_the_page_fits_the_screen(page_file, tmp_path):
    seen = visit(page_file[0], 390, 844, tmp_path / "phone.png")
    assert seen["errors"] == [] and seen["overflow"] <= 0


def test_negative_control_a_broken_figure_and_a_wide_block_are_seen(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><meta name='viewport' content='width=device-width'></head><body>"
                    "<img src='data:image/png;base64,iVBORw0KGgoAAAA='><div style='width:2000px'>wide</div>"
                    "<script>console.error('boom')</script></body></html>")
    seen = visit(page, 390, 844)
    assert seen["images"][0]["width"] == 0 and seen["overflow"] > 0 and seen["errors"] and seen["recipe"] is None
