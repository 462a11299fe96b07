"""The Learn page in a real browser (Debian's chromium, Playwright): a link from the Compress page's caption opens its
section on MiniLM, the figures draw, a slider step redraws its figure, and the screenshot README.md shows is saved."""
import pytest

from conftest import ROOT
from test_browser import CHROMIUM, _idle, serve

SHOT = ROOT / "assets" / "learn.png"


@pytest.mark.heavy  # make test-slow only: test_learn_page's AppTests draw the same page
@pytest.mark.slow
def test_learn_page_opens_from_a_caption_link_and_redraws():
    sync_api = pytest.importorskip("playwright.sync_api")
    with serve() as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1500, "height": 2300})
        page.goto(url + "/compress", timeout=120_000)
        link = page.get_by_role("link", name="See it on the model: Learn, Low rank").first
        link.wait_for(timeout=180_000)
        _idle(page)
        link.click()
        page.get_by_text("Low rank: what a rank cut does to a weight matrix").wait_for(timeout=300_000)
        page.locator(".js-plotly-plot .gtitle").first.wait_for(timeout=120_000)
        _idle(page)
        assert "section=low-rank" in page.url
        title = page.locator(".js-plotly-plot .gtitle").first
        before = title.text_content()
        slider = page.get_by_role("slider", name="Rank (fraction of min(m, n))")
        slider.focus()
        for _ in range(5):
            slider.press("ArrowRight")
        sync_api.expect(title).not_to_have_text(before, timeout=30_000)
        _idle(page)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOT), full_page=True)
        browser.close()
    assert SHOT.stat().st_size > 10_000
