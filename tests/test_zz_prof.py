import time
import pytest
from test_browser import ARGS, CHROMIUM, serve, _pick, _recipe
from test_browser_nav import idle
T0 = time.time()
def say(m): print(f"{time.time() - T0:7.1f}s {m}", flush=True)
def test_prof():
    sync_api = pytest.importorskip("playwright.sync_api")
    from compress.table.presets import BY_NAME
    say("start")
    with serve() as url, sync_api.sync_playwright() as p:
        say("served")
        page = p.chromium.launch(executable_path=CHROMIUM, args=ARGS).new_page(viewport={"width": 1366, "height": 900})
        page.goto(f"{url}/compress", timeout=120_000)
        page.get_by_text("Quantization", exact=True).wait_for(timeout=120_000)
        say("page up")
        _pick(page, sync_api, "Bundled model", "tinygpt", lambda: page.wait_for_url("**model=tinygpt**", timeout=60_000))
        say("tinygpt")
        for name in ("about 4x", "static", "about 4x"):
            _pick(page, sync_api, "Start from a preset", name, lambda: idle(page))
            say(name)
        page.get_by_role("button", name="Apply", exact=True).click()
        page.get_by_text("Quality: ").first.wait_for(timeout=300_000)
        say("verdict")
        idle(page)
        say("idle")
