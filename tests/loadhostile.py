"""The load test's sixth, hostile session (issue 24): uploads hostile zips made here from the bundled tinygpt through
the sidebar (each must be refused in one line, with no exception on the page) while a sweep it started first at the
Trade-offs page's maxima on MiniLM (1,000 trials, 5,000 healing steps each) runs beside the other sessions' work."""
import tempfile
import time
from pathlib import Path

ERROR = '[data-testid="stAlertContentError"]'
TAKEN = "A compressed model was uploaded"  # the sidebar's line once a zip loaded (the one sound case below)
EXCEPTION = '[data-testid="stException"]'


def hostile_zips() -> list[Path]:
    """Compressed-model zips of the bundled tinygpt made hostile the ways tests/test_hostile_zips.py checks."""
    import zipfile

    import compress as C
    from test_hostile_zips import _constant_attr, _edit, _files, _huge_constant, _loop, _raw_header, _set, _weights
    base = C.load_model("tinygpt")
    ort = _files(C.compress(base, C.Recipe(quant="int8", runtime="onnxruntime")))
    w = _files(C.compress(base, C.Recipe(quant="int8")))
    cases = {"onnx-loop": {**ort, "model.onnx": _edit(ort["model.onnx"], _loop)},
             "onnx-external-constant": {**ort, "model.onnx": _edit(ort["model.onnx"], _constant_attr)},
             "onnx-constant-of-shape": {**ort, "model.onnx": _edit(ort["model.onnx"], _huge_constant)},
             "header-300k-tensors": {**w, "weights.safetensors": _raw_header(300_000)},
             "nan-scale": _weights(w, _set(".scales", float("nan"))),
             "card-heal-strings": {**w, "card.json": w["card.json"].replace(b'"heal": null', b'"heal": "x"')}}
    d = Path(tempfile.mkdtemp(prefix="compress-hostile-"))
    out = []
    for name, files in cases.items():
        with zipfile.ZipFile(d / f"{name}.zip", "w") as z:
            for n, data in files.items():
                z.writestr(n, data)
        out.append(d / f"{name}.zip")
    return out


async def _idle(page) -> None:
    await page.wait_for_timeout(1500)  # the run the upload started shows its status widget first
    await page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=600_000)


async def open_uploader(page, url: str) -> None:
    """The sidebar's upload radio, clicked until its file input is there."""
    await page.goto(url, timeout=120_000)
    for _ in range(5):  # a click made while the first (cold) run still goes can be dropped: again, when idle
        await page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=300_000)
        await page.get_by_text("Upload a zip", exact=True).click()
        try:
            await page.locator('input[type="file"]').wait_for(state="attached", timeout=20_000)
            return
        except Exception:  # noqa: BLE001 - not there yet: click again
            continue


async def _uploads(page, url: str, zips: list[Path], log: list, name: str, until: float = float("inf")) -> None:
    """Each zip on a fresh page (no earlier refusal still shown), then its own refusal awaited: the load waits its
    turn on the queue behind the other sessions' jobs, so the page's run may end before it does."""
    for z in zips:
        if time.time() > until:
            return
        await open_uploader(page, url)
        t0 = time.time()
        await page.locator('input[type="file"]').set_input_files(str(z))
        try:  # its refusal, or (card-heal-strings: the card's non-dict heal is ignored, its weights are sound) its load
            await page.locator(ERROR).or_(page.get_by_text(TAKEN)).first.wait_for(timeout=600_000)
        except Exception:  # noqa: BLE001 - neither came: logged as nothing shown
            pass
        await _idle(page)
        shown = await page.locator(ERROR).all_inner_texts()
        log.append({"session": name, "hostile": z.stem, "shown": [s[:300] for s in shown], "s": round(time.time() - t0),
                    "taken": await page.get_by_text(TAKEN).count() > 0,
                    "exceptions": await page.locator(EXCEPTION).count(), "t": time.time()})


async def hostile(page, url: str, until: float, log: list, name: str) -> None:
    zips = hostile_zips()
    await page.goto(f"{url}/tradeoffs?model=minilm", timeout=120_000)  # the sweep first: it runs beside everything
    heal = page.get_by_role("spinbutton", name="Healing steps per trial")
    await heal.wait_for(timeout=180_000)
    await page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=300_000)
    await heal.fill("5000")
    await heal.press("Enter")
    trials = page.get_by_role("spinbutton", name="trials")
    await trials.fill("1000")
    await trials.press("Enter")
    await _idle(page)
    await page.get_by_role("button", name="Start sweep").click(timeout=60_000)
    await _idle(page)
    log.append({"session": name, "swept": "minilm at the page's maxima (1000 trials, 5000 healing steps)",
                "errors": await page.locator(ERROR).all_inner_texts(),
                "exceptions": await page.locator(EXCEPTION).count(), "t": time.time()})
    await _uploads(page, url, zips, log, name)  # each zip once, then again while the others run
    while time.time() < until:
        await _uploads(page, url, zips, log, name, until)
