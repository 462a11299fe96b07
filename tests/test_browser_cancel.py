"""Cancel in a real browser (Debian's chromium, Playwright) on MiniLM, for the two ways a hostile review found it did
nothing: a job started by a one-shot button (Spectra's sensitivity: the run the click caused never reached the wait
that read it, and the job ran 85 s on) and a job inside a fragment (Learn's per-token table: a click there does not
end the run that waits). Each job must end "cancelled" in the results store, not run to "done", and not start again."""
import sqlite3
import time

import pytest

from test_browser import CHROMIUM, _idle, serve


def _states(data, kind: str) -> list[str]:
    path = data / "results.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("select state from jobs where kind = ? order by created", (kind,))]


def _ended(data, kind: str) -> list[str]:
    """The job's states once its last one has ended (a hang guard of 120 s, not a timing: the job itself runs longer
    than that when Cancel does nothing, 25 s on an idle machine for the table, 85 s for sensitivity)."""
    for _ in range(240):
        states = _states(data, kind)
        if states and states[-1] not in ("queued", "running"):
            return states
        time.sleep(0.5)
    return _states(data, kind)


def _cancel(page, sync_api):
    button = page.get_by_role("button", name="Cancel")
    button.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)  # it runs
    button.click()
    sync_api.expect(button).to_have_count(0, timeout=60_000)


@pytest.mark.slow
def test_cancel_ends_a_button_started_job_and_a_job_inside_a_fragment(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with serve(COMPRESS_DATA=str(tmp_path)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(url + "/spectra?model=minilm", timeout=120_000)
        page.get_by_text("Per-layer sensitivity").wait_for(timeout=300_000)
        _idle(page)
        page.get_by_role("button", name="Measure sensitivity").click()
        _cancel(page, sync_api)
        assert _ended(tmp_path, "sensitivity") == ["cancelled"]

        page.goto(url + "/learn?model=minilm&section=vocabulary", timeout=120_000)
        toggle = page.get_by_text("Also output (runs each")
        toggle.wait_for(timeout=300_000)
        _idle(page)
        toggle.click()
        _cancel(page, sync_api)
        assert _ended(tmp_path, "learn_vocab") == ["cancelled"]
        _idle(page)
        page.wait_for_timeout(2000)
        assert _states(tmp_path, "learn_vocab") == ["cancelled"]  # the toggle still on: not started again
        browser.close()
