"""The server's resident memory per loaded model (issue 27; not part of make test): `python tests/rssbench.py
[GPT2_ZIP]` starts `streamlit run app.py`, opens the Model page on each bundled model by link (MiniLM, the default,
first; then tinygpt and TinyLlama: the bundled models are the server's, whichever session asks) and, in the last
session, uploads GPT-2 small at its real size with random weights through the sidebar (made here, seeded, unless a
zip is given; never in git). After each load (the Model page's card shown, the server idle) it reads the server's
RSS, and prints one JSON object: per model its params (the card's), its float32 weight bytes, the RSS it added and
that over its weight bytes; the base (RSS once the first page is up, MiniLM loaded) and the peak (VmHWM). README's
server bound is written from it."""
import json
import os
import re
import socket
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadtest import ARGS, CHROMIUM, ROOT, _server, wait_healthy  # noqa: E402

IDLE = '[data-testid="stStatusWidget"]'


def _status(pid: int, key: str) -> float:
    """A /proc/PID/status field (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def gpt2_zip(folder: Path) -> Path:
    """GPT-2 small (GPT2Config's defaults, 124M params) with seeded random weights, zipped as a user would."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder / "gpt2")
    out = folder / "gpt2.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for f in sorted((folder / "gpt2").iterdir()):
            z.write(f, f.name)
    return out


def _card(page, pid: int, name: str) -> dict:
    """Once the Model page shows `name`'s card and no run goes on: its params and the server's RSS."""
    page.get_by_role("heading", name=re.compile(f"^Model: {re.escape(name)}")).wait_for(timeout=600_000)
    page.get_by_text("Params", exact=True).wait_for(timeout=600_000)
    page.wait_for_selector(IDLE, state="detached", timeout=600_000)
    time.sleep(3)  # the queue's job has ended and its memory is trimmed (jobs._trim)
    value = page.locator('[data-testid="stMetric"]').filter(has_text="Params") \
        .locator('[data-testid="stMetricValue"]').inner_text()
    params = round(float(value.split()[0]) * 1e6)
    return {"model": name, "params": params, "weight_mb": round(params * 4 / 1e6, 1),
            "rss_mb": round(_status(pid, "VmRSS"), 1)}


def main() -> dict:
    from playwright.sync_api import sync_playwright
    work = Path(tempfile.mkdtemp(prefix="compress-rssbench-"))
    z = Path(sys.argv[1]) if len(sys.argv) > 1 else gpt2_zip(work)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, url = _server(port, str(work)), f"http://127.0.0.1:{port}"
    rows = []
    try:
        if not wait_healthy(url, 120):
            raise SystemExit("the server did not become healthy in 120 s")
        started = round(_status(server.pid, "VmRSS"), 1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            t = time.time()
            page.goto(f"{url}/?model=minilm", timeout=120_000)
            rows.append({**_card(page, server.pid, "minilm"), "s": round(time.time() - t, 1)})
            for name in ("tinygpt", "tinyllama"):  # bundled models are the server's (its LRU)
                t = time.time()
                page.goto(f"{url}/?model={name}", timeout=120_000)
                rows.append({**_card(page, server.pid, name), "s": round(time.time() - t, 1)})
            t = time.time()
            page.get_by_text("Upload a zip", exact=True).click()
            page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(z)
            rows.append({**_card(page, server.pid, z.name), "s": round(time.time() - t, 1)})
            browser.close()
        peak = round(_status(server.pid, "VmHWM"), 1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    before = rows[0]["rss_mb"]
    for r in rows[1:]:
        r["added_mb"] = round(r["rss_mb"] - before, 1)
        r["added_per_weight_byte"] = round(r["added_mb"] / r["weight_mb"], 2)
        before = r["rss_mb"]
    return {"machine": f"{os.cpu_count()} cores", "rss_healthy_no_session_mb": started,
            "base_mb (first page up, MiniLM loaded)": rows[0]["rss_mb"], "loads": rows, "peak_mb": peak}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
