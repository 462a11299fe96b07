"""A 1.1B-parameter Llama-shaped upload (issue 27; not part of make test, the weights are never in git).

`python tests/big11b.py make DIR` writes DIR/ (TinyLlama-1.1B's config: hidden 2,048, 22 layers, 32 query heads over
4 key/value heads, SwiGLU 5,632, vocabulary 32,000, untied; seeded random bf16 weights, norms at 1; the bundled
TinyLlama's byte-level tokenizer) and DIR.zip as the sidebar takes it (stored, ZIP64: about 2.2 GB).

`python tests/big11b.py measure DIR.zip [LAYERS]` runs, in this fresh process, each step as a job of the server's
queue (compress.job_queue, as the app does) and prints one JSON object: the load kept in bf16 (time, RSS peak), the
Model card's sizes (time, RSS peak, progress reports, and a second sizes job cancelled after its first progress
report: how long the cancel took), and the spectra of the first LAYERS blocks (default 2; the model cut to them,
the budget raised for it: with the default budget the whole model's spectra are refused in one line, also recorded),
per layer and extrapolated to all 22 (an extrapolation, said so in the output)."""
import json
import sys
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHAPE = dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
             intermediate_size=5632, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
             tie_word_embeddings=False)


def make(out: Path) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM
    out.mkdir(parents=True, exist_ok=True)
    cfg = LlamaConfig(**SHAPE, dtype="bfloat16")
    with torch.device("meta"):  # the names and shapes only: nothing allocated
        shapes = {k: v.shape for k, v in LlamaForCausalLM(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.ones(s, dtype=torch.bfloat16) if k.endswith("norm.weight") else
          (torch.randn(s, generator=g) * 0.02).to(torch.bfloat16) for k, s in shapes.items()}
    save_file(sd, out / "model.safetensors", metadata={"format": "pt"})
    print("params", sum(t.numel() for t in sd.values()), file=sys.stderr)
    del sd
    cfg.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (out / f).write_bytes((ROOT / "assets" / "tinyllama" / f).read_bytes())
    z = out.with_suffix(".zip")
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for f in sorted(out.iterdir()):
            zf.write(f, f.name)
    return z


def _hwm_gb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return round(int(line.split()[1]) / 1e6, 2)


def _reset_hwm() -> None:
    """The peak counts from here (Linux: writing 5 to clear_refs resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _job(q, kind: str, fn, label: str) -> tuple[object, dict]:
    _reset_hwm()
    t = time.perf_counter()
    job = q.submit(kind, fn, "big11b", label)
    q.wait(job)
    out = {"s": round(time.perf_counter() - t, 1), "rss_peak_gb": _hwm_gb(), "state": job.state}
    if job.error:
        out["error"] = job.error
    return job.result, out


def measure(zip_path: str, layers: int = 2) -> dict:
    import os

    import compress as C
    from compress.techniques.spectrum import compute_spectra
    q, res = C.job_queue(), {"zip_gb": round(Path(zip_path).stat().st_size / 1e9, 2), "cpus": os.cpu_count()}
    b, res["load (bf16 kept)"] = _job(q, "load", lambda job: C.load_upload(zip_path, "keep"), "load")
    res["params"], res["weights"] = b.info["params"], b.info["dtype"]

    reports = []
    n, res["sizes"] = _job(q, "sizes", lambda job: C.numbers(b, progress=reports.append), "sizes")
    res["sizes"].update(progress_reports=len(reports), size_gb=round(n["size_bytes"] / 1e9, 3) if n else None,
                        breakdown_gb={k: round(v / 1e9, 3) for k, v in n["size_breakdown"].items()} if n else None)
    first = threading.Event()
    job = q.submit("sizes", lambda job: C.numbers(b, progress=lambda f: first.set()), "big11b", "sizes again")
    first.wait(600)
    t = time.perf_counter()
    q.cancel(job)
    q.wait(job)
    res["sizes cancelled after its first progress report"] = {"state": job.state,
                                                               "cancel_took_s": round(time.perf_counter() - t, 2)}

    _, res["spectra, whole model, default budget"] = _job(q, "spectra", lambda job: C.spectra(b), "spectra")
    blocks = b.model.model.layers
    b.model.model.layers = blocks[:layers]  # the first blocks: the same shapes, a budget that fits them
    os.environ["COMPRESS_MEM_BUDGET_MB"] = "100000"
    spec, res["spectra"] = _job(q, "spectra", lambda job: compute_spectra(b.model, b.adapter), "spectra, cut")
    b.model.model.layers = blocks
    per = res["spectra"]["s"] / layers
    res["spectra"].update(layers=layers, matrices=len(spec or {}), s_per_layer=round(per, 1),
                          s_all_22_layers_extrapolated=round(per * 22))
    return res


if __name__ == "__main__":
    if sys.argv[1:2] == ["make"]:
        print(make(Path(sys.argv[2])))
    elif sys.argv[1:2] == ["measure"]:
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2), indent=1))
    else:
        raise SystemExit(__doc__)
