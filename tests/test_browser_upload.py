"""A Llama-family upload in a real browser (issue 27), against a server started with COMPRESS_MAX_UPLOAD_MB=20.

A tiny random Qwen2 (tests/builders.py: 4 query heads over 2 key/value heads, SwiGLU, rotary, its own byte-level BPE)
saved with save_pretrained and its folder zipped as a user would (`zip -r qwen2.zip qwen2`: the files under one
folder) goes through the sidebar's uploader (a tiny model: the bundled TinyLlama's Apply measured 7x longer); a 25 MB
file is refused by the uploader itself with Streamlit's one line, and sent anyway by hand (the PUT the browser made for
the first file, replayed with a bigger body) the server answers 413 and goes on serving; then heads (a count the
grouped-query control offers) + FFN + int8 are applied on the Compress page, which shows the size going down and the
decoder's quality on both sides, with no error or exception.
"""
import http.client
import re
import urllib.parse
import zipfile

import pytest

import compress as C
from test_browser import ARGS, CHROMIUM, SCREEN, _idle, _pick, _recipe, serve

LIMIT_MB = 20  # above the model's zip, below the file sent over it
OVER = 25 << 20
ERROR, EXCEPTION = '[data-testid="stAlertContentError"]', '[data-testid="stException"]'


@pytest.fixture(scope="module")
def server():
    with serve(COMPRESS_MAX_UPLOAD_MB=str(LIMIT_MB)) as url:
        yield url


def _zip_folder(folder, out):
    """The folder zipped as `zip -r` makes it: each file under the folder's name."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"{folder.name}/{f.name}")
    return out


def _slider_to(page, label: str, steps: list[str], want: str, in_url: str):
    """Move a slider by keyboard to the step `want` (its shown text; `steps`: every step's, in order) until the URL
    holds `in_url`: a key press made while a rerun goes can be dropped, so the thumb is read back and moved again."""
    thumb = page.get_by_role("slider", name=label)
    for _ in range(6):
        _idle(page)
        now = thumb.get_attribute("aria-valuetext")
        if now == want and in_url in page.url + "&":
            return
        thumb.focus()
        move = steps.index(want) - steps.index(now)
        for _ in range(abs(move)):
            thumb.press("ArrowRight" if move > 0 else "ArrowLeft")
        page.wait_for_timeout(500)
    raise AssertionError(f"{label}: {thumb.get_attribute('aria-valuetext')}, {page.url}")


def _put(server: str, path: str, headers: dict, n: int, how: str) -> tuple[int, str]:
    """PUT a multipart body carrying n zero bytes as a file, its length declared (Content-Length: the server refuses
    before reading) or chunked (no length: the server counts as it reads): (status, body)."""
    boundary = "compress27"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="over.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    chunks = [head, *([b"\0" * (1 << 20)] * (n >> 20)), b"\0" * (n % (1 << 20)), tail]
    conn = http.client.HTTPConnection(urllib.parse.urlparse(server).netloc, timeout=60)
    hdrs = {**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        if how == "chunked":
            conn.request("PUT", path, body=iter(chunks), headers=hdrs, encode_chunked=True)
        else:
            conn.request("PUT", path, body=b"".join(chunks), headers=hdrs)
    except (BrokenPipeError, ConnectionResetError):  # refused before the whole body was read: the answer is there
        pass
    r = conn.getresponse()
    out = (r.status, r.read().decode())
    conn.close()
    return out


def test_a_llama_zip_through_the_sidebar_heads_ffn_int8_and_the_upload_limit(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from builders import _tokenizers, build_family
    from compress.measure import evaluate
    folder = tmp_path / "qwen2"
    folder.mkdir()
    lines = (evaluate.ASSETS / "heal" / "sentences.txt").read_text().splitlines()[:600]
    build_family("qwen2", folder, _tokenizers(lines))
    tiny = _zip_folder(folder, tmp_path / "qwen2.zip")
    assert tiny.stat().st_size < LIMIT_MB << 20 < OVER
    over = tmp_path / "over.zip"
    over.write_bytes(b"\0" * OVER)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=SCREEN)
        puts = []
        page.on("request", lambda r: puts.append(r) if r.method == "PUT" and "/_stcore/upload_file/" in r.url else 0)
        page.goto(f"{server}/compress?model=tinyllama", timeout=60_000)  # (a small default)
        page.get_by_text("Quantization", exact=True).wait_for(timeout=90_000)
        _idle(page)
        page.get_by_text("Upload a zip", exact=True).click()
        uploader = page.locator('[data-testid="stSidebar"] [data-testid="stFileUploader"]')
        sync_api.expect(uploader).to_contain_text(f"at most {LIMIT_MB} MB")  # the variable, in the widget's words
        uploader.locator('input[type="file"]').set_input_files(tiny)
        page.get_by_text(re.compile(r"^Active: qwen2\.zip \(Qwen2, generation\)")).wait_for(timeout=120_000)
        _idle(page)
        assert len(puts) == 1

        uploader.locator('input[type="file"]').set_input_files(over)  # over the limit: the uploader refuses it
        sync_api.expect(uploader).to_contain_text(f"File must be {LIMIT_MB:.1f}MB or smaller.")
        assert len(puts) == 1  # nothing was sent
        put = puts[0]  # the same request by hand: this session, its XSRF token and cookie, other bodies
        headers = {"X-Xsrftoken": put.headers["x-xsrftoken"], "Cookie": "; ".join(
            f"{c['name']}={c['value']}" for c in page.context.cookies(server))}
        path = urllib.parse.urlparse(put.url).path.rsplit("/", 1)[0] + "/by-hand"
        said = {how: _put(server, path, headers, n, how) for how, n in
                (("declared", OVER), ("chunked", OVER), ("declared-small", 1024))}
        assert said == {"declared": (413, "File too large"), "chunked": (413, "File too large"),
                        "declared-small": (204, "")}, said  # refused for its size, declared or not; the rest taken
        assert page.request.get(f"{server}/_stcore/health").text() == "ok"  # and the server goes on

        counts = C.FIELDS["heads"].allowed(C.load_upload(folder))
        assert counts == [2, 4]  # 4 query heads over 2 key/value heads: equal groups only (all 4, or 1 a group)
        _slider_to(page, "Attention heads kept per layer", ["2", "all 4"], "2", "heads=2&")
        page.get_by_text(re.compile(r"^More techniques")).click()
        _slider_to(page, "FFN neurons kept", [f"{k / 20:.2f}" for k in range(1, 21)], "0.50", "ffn=0.5&")
        _pick(page, sync_api, "Quantization", "int8", lambda: page.wait_for_url(lambda u: "quant=int8" in u,
                                                                                 timeout=15_000))
        _idle(page)
        recipe = _recipe(page)
        page.get_by_role("button", name="Apply", exact=True).click()
        page.get_by_text("Original vs compressed").wait_for(timeout=400_000)  # (timings wait for the machine's lock)
        page.get_by_text("Sample outputs", exact=True).wait_for(timeout=60_000)  # the report's caption says it too
        _idle(page)
        metrics = {}
        for m in page.locator('.st-key-cmp_wide [data-testid="stMetric"]').all():
            label = m.locator('[data-testid="stMetricLabel"]').inner_text().strip()
            metrics.setdefault(label, []).append(m.locator('[data-testid="stMetricValue"]').inner_text().strip())
        smaller = page.locator('.st-key-cmp_wide [data-testid="stMetric"]').filter(has_text="Size") \
            .locator('[data-testid="stMetricDelta"]').inner_text()
        title = page.get_by_role("heading", name=re.compile("^Original vs compressed")).inner_text()
        active = page.get_by_text(re.compile(r"^Active: ")).inner_text()
        errors, exceptions = page.locator(ERROR).all_inner_texts(), page.locator(EXCEPTION).count()
        browser.close()
    assert (recipe.heads, recipe.ffn, recipe.quant) == (2, 0.5, "int8") and recipe.heads in counts, recipe
    assert title.endswith(recipe.describe()), (title, recipe.describe())  # the recipe applied is the one shown
    assert active.startswith("Active: qwen2.zip"), active
    orig_mb, comp_mb = (float(v.split()[0]) for v in metrics["Size"])
    assert comp_mb < orig_mb and float(smaller.split("x")[0]) > 2, (metrics["Size"], smaller)  # int8, half the FFN
    #  and half the heads
    bits = [float(v) for v in metrics["bits per token"]]
    top1 = [float(v) for v in metrics["top1 agreement"]]
    assert len(bits) == 2 and all(b > 0 for b in bits) and top1[0] == 1.0 and 0 <= top1[1] < 1.0, metrics
    assert errors == [] and exceptions == 0, (errors, exceptions)
