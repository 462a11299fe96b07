"""The recipe is the link's and the session's, whichever page a session starts on (issue 25), in a real browser on a
freshly started server: a session opens each page from a shared link, visits every other page through the sidebar
and ends on Compress, whose URL must still hold the link's recipe (Streamlit drops a widget's value on a page switch
unless the widget persists it). AppTest does not drop them, so only a browser shows this. A session that starts on
Compress (the first of its fresh server, out to Learn and back) is the newcomer's test (tests/test_browser.py)."""
import urllib.parse

import pytest

import compress as C
from test_browser import ARGS, CHROMIUM, serve

PAGES = {"Model": "", "Spectra": "spectra", "Compress": "compress", "Trade-offs": "tradeoffs", "Learn": "learn"}
STARTS = ["Model", "Spectra", "Trade-offs", "Learn"]  # (Compress: test_browser.py's newcomer)
LINK = {"layers": "2", "ffn": "0.5", "quant": "int8", "rank_mode": "ratio", "rank": "0.5", "heal_lr": "0.001"}


@pytest.mark.slow
def test_a_shared_link_keeps_its_recipe_on_every_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    want = C.Recipe.from_params(LINK)
    query = urllib.parse.urlencode({"model": "tinygpt", **LINK})
    with serve() as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for start in STARTS:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"{url}/{PAGES[start]}?{query}", timeout=120_000)
            page.locator('[data-testid="stSidebarNav"] a').first.wait_for(timeout=120_000)  # the app has drawn
            idle(page)
            nav = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
            assert [n.split("\n")[-1] for n in nav] == list(PAGES), f"the sidebar lists {nav}"
            for other in [*(n for n in PAGES if n not in (start, "Compress")), "Compress"]:
                page.locator('[data-testid="stSidebarNav"] a').filter(has_text=other).click()
                idle(page)
            try:  # the last run writes the recipe into the URL (a moment after its status widget goes, under load)
                page.wait_for_url(lambda u: "quant=" in u, timeout=15_000)
            except sync_api.TimeoutError:
                pass  # the assertions below say what the URL held
            got = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(page.url).query))
            assert got.get("model") == "tinygpt", f"started on {start}: the model fell back ({page.url})"
            assert C.Recipe.from_params(got) == want, f"started on {start}: the recipe was lost ({page.url})"
            page.context.close()
        browser.close()


def idle(page):
    page.wait_for_timeout(1000)  # a click's run shows its status widget first
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=180_000)


@pytest.mark.slow
def test_a_preset_resets_the_greyed_out_controls_the_browser_still_holds():
    """After the sidebar's switch to a decoder, presets "about 4x", "static" (refused there), "about 4x": Apply must
    measure the recipe the controls show. The browser sent back the values of greyed-out controls (static, vocab)
    that the second preset had reset, and Apply ran the static table (a newcomer's review found it; AppTest does not
    keep a browser's widget values, so only a browser shows it)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from compress.table.presets import BY_NAME
    from test_browser import _pick, _recipe
    with serve() as url, sync_api.sync_playwright() as p:
        page = p.chromium.launch(executable_path=CHROMIUM, args=ARGS).new_page(viewport={"width": 1366, "height": 900})
        page.goto(f"{url}/compress", timeout=120_000)
        page.get_by_text("Quantization", exact=True).wait_for(timeout=120_000)
        _pick(page, sync_api, "Bundled model", "tinygpt",
              lambda: page.wait_for_url("**model=tinygpt**", timeout=60_000))
        for name in ("about 4x", "static", "about 4x"):
            _pick(page, sync_api, "Start from a preset", name, lambda: idle(page))
        assert _recipe(page) == BY_NAME["about 4x"].build()
        page.get_by_role("button", name="Apply", exact=True).click()
        page.get_by_text("Quality: ").first.wait_for(timeout=300_000)  # measured: the verdict's line, and above it
        alerts = page.locator('[data-testid="stAlert"]').all_inner_texts()  # what the page says of the recipe (the
        # sample outputs drawn after it, 4 x 200 tokens, are not waited for: a minute of the test under load)
        assert _recipe(page) == BY_NAME["about 4x"].build() and not [a for a in alerts if "static" in a], alerts


@pytest.mark.slow
def test_a_learn_tab_is_in_the_link_a_teacher_copies():
    """Clicking a Learn tab writes its section (and the bundled model) into the address; that address opened in a fresh
    browser shows the same tab on the same model (a newcomer's review: a teacher could not copy the tab shown)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with serve() as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(f"{url}/learn?model=tinygpt", timeout=120_000)
        page.get_by_role("tab", name="Fewer layers").wait_for(timeout=180_000)
        idle(page)
        page.get_by_role("tab", name="Fewer layers").click()
        page.wait_for_url(lambda u: "section=layers" in u, timeout=60_000)
        idle(page)
        link = page.url
        got = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(link).query))
        assert got == {"section": "layers", "model": "tinygpt"}
        page.context.close()
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(link, timeout=120_000)
        tab = page.get_by_role("tab", name="Fewer layers")
        tab.wait_for(timeout=180_000)
        idle(page)
        assert tab.get_attribute("aria-selected") == "true"
        assert page.get_by_role("tab", name="Article vs this machine").get_attribute("aria-selected") == "false"
        assert "tinygpt" in page.locator('[data-testid="stSidebar"]').inner_text()
        browser.close()
