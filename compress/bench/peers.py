"""What a user would pick instead, measured beside the project's recipes in one process (`bench --peers`): ONNX
Runtime fp32 and int8 per channel of the original (onnxruntime's own quantize_dynamic: the project's onnxruntime
runtime), and Model2Vec's static model distilled from the same MiniLM (model2vec.distill, its default 256 PCA dims).

Model2Vec's `distill` extra downgrades transformers, so the distillation runs once in a virtual environment of its
own (PEERS_DIR, made by this module with pip; without it the row is skipped with the reason) and the distilled model
is encoded here by the base `model2vec` package. Every model is timed in the same rounds (measure.latency: A, B, C...
in turn): 8 x 128 token ids, and the real sentences in stretches of pipeline.STRETCH batches of 32, each call
tokenizing, embedding, pooling and normalizing. Quality on both evaluation sets; Model2Vec's 256 dimensions have no
cosine to the original's 384, so every row also gets the width-free numbers: top-5 neighbour agreement and the
Spearman correlation of all pairwise similarities (evaluate.neighbours).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ..measure import evaluate, core as measure
from ..table import pipeline
from ..models.adapters import forward
from ..errors import CompressError
from ..table.recipe import Recipe
from ..measure.texts import EVAL_SETS, eval_set

M2V = "0.10.0"
PEERS_DIR = Path(os.environ.get("COMPRESS_PEERS", Path.home() / ".cache" / "compress-peers"))
DISTILL = ("import sys; from model2vec.distill import distill; "
           "distill(model_name=sys.argv[1], pca_dims=256).save_pretrained(sys.argv[2])")
ORT = [("ONNX Runtime fp32 (the original)", Recipe(runtime="onnxruntime")),
       ("ONNX Runtime int8 per channel (quantize_dynamic; = the project's int8 + runtime onnxruntime)",
        Recipe(quant="int8", runtime="onnxruntime"))]


def model2vec_dir(bundle, log=print) -> Path | str:
    """The folder of Model2Vec's distill of the bundle (made once, in its own venv), or why it cannot be made."""
    src = bundle.info.get("path")
    if not src:
        return f"Model2Vec distills from a model folder; {bundle.name} was not loaded from one"
    out = PEERS_DIR / f"model2vec-{bundle.content_hash[:16]}"
    if (out / "model.safetensors").exists():
        return out
    venv, py = PEERS_DIR / "model2vec-venv", PEERS_DIR / "model2vec-venv" / "bin" / "python"
    steps = ([] if py.exists() else [
        [sys.executable, "-m", "venv", str(venv)],
        [str(py), "-m", "pip", "install", "-q", "torch==2.13.0", f"model2vec[distill,quantization]=={M2V}"]])
    try:
        for cmd in steps + [[str(py), "-c", DISTILL, str(src), str(out)]]:
            log(f"peers: {' '.join(cmd[:4])} ...")
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    except (OSError, subprocess.SubprocessError) as e:
        tail = (getattr(e, "stderr", "") or str(e)).strip().splitlines()[-1:] or [""]
        return f"Model2Vec's distill could not run here ({type(e).__name__}: {tail[0][:200]})"
    return out


class _Ours:
    """A bundle as the bench calls it: ids -> hidden states; texts -> L2-normalized sentence embeddings."""

    def __init__(self, bundle, ids):
        self.b, self.ids = bundle, ids

    def ids_call(self):
        return forward(self.b.model, self.b.adapter, *self.ids)

    def embed(self, texts):
        return evaluate.embed(self.b, texts, 32)


class _Model2Vec:
    def __init__(self, path: Path, batch: int, seq: int):
        from model2vec import StaticModel  # the base package (no distill extra): loads and encodes
        self.m = StaticModel.from_pretrained(str(path))
        g = np.random.default_rng(0)
        self.ids = g.integers(1000, self.m.embedding.shape[0], (batch, seq))
        self.bytes = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))

    def ids_call(self):  # its own pooling of token ids (StaticModel._encode_batch)
        return self.m.embedding[self.ids].mean(axis=1)

    def embed(self, texts):
        return torch.nn.functional.normalize(torch.from_numpy(np.asarray(self.m.encode(texts), dtype=np.float32)), dim=-1)


def _timed(models: dict, runs: int, log) -> dict:
    """Both workloads, every model in the same rounds: {name: (ids p50 ms, sentences/s)}."""
    ids = measure.latency({k: m.ids_call for k, m in models.items()}, runs=runs)
    sent, timed = pipeline.time_sentences({k: m.embed for k, m in models.items()}, runs)
    n = sum(map(len, timed))
    busy = max(v["others_busy"] or 0 for v in (*ids.values(), *sent.values()))
    log(f"peers: timed; other processes used {busy:.0%} of the CPUs")
    return {k: (ids[k]["p50"], round(n / (sent[k]["total_ms"] / 1e3), 1)) for k in models}


def _agreement(embed, base, model=None) -> dict:
    """Neighbour agreement and similarity Spearman with the original on both sets (model: a bundle whose evaluation
    embeddings quality() already computed; else embed(texts) of a peer)."""
    out = {}
    for name in EVAL_SETS:
        mine = embed(eval_set(name)[0]) if model is None else evaluate.eval_embeddings(model, name)[0]
        nb = evaluate.neighbours(mine, evaluate.eval_embeddings(base, name)[0])
        out.update({f"{k}{'' if name == 'project' else '_' + name}": v for k, v in nb.items()})
    return out


def run(base, recipes, batch=8, seq=128, runs=7, text=None, log=print) -> tuple[list[dict], list[str]]:
    """Rows (fp32 original first) and the reasons of any peer skipped."""
    if base.task != "embedding":
        raise CompressError("the peers are sentence-embedding models: bench --peers takes an encoder")
    ids = evaluate.workload(base, batch, seq)
    built = {"fp32 (the original, eager)": (base, None)}
    for name, r in ORT + [(f"project: {r.describe()}", r) for r in recipes]:
        name = name if name not in built else f"{name} (#{len(built)})"  # recipes that differ in no described field
        log(f"peers: building {name}")
        c = pipeline.compress(base, r, texts=text)
        built[name] = (c, pipeline.numbers(c)["size_bytes"])
    models = {k: _Ours(b, ids) for k, (b, _) in built.items()}
    skipped = []
    path = model2vec_dir(base, log)
    if isinstance(path, str):
        skipped.append(f"Model2Vec: {path}")
    else:
        try:
            models["Model2Vec distill (256 dims, fp16)"] = _Model2Vec(path, batch, seq)
        except ImportError as e:
            skipped.append(f"Model2Vec: the model2vec package is missing ({e})")
    orig_bytes = pipeline.numbers(base)["size_bytes"]
    speed = _timed(models, runs, log)
    o_ms, o_rate = speed["fp32 (the original, eager)"]
    rows = []
    for k, m in models.items():
        size = m.bytes if isinstance(m, _Model2Vec) else built[k][1] or orig_bytes
        q = {} if isinstance(m, _Model2Vec) else {"fidelity": 1.0, "fidelity_docs": 1.0} if m.b is base else \
            evaluate.quality(m.b, base)
        rows.append({"model": k, "size MB": round(size / 1e6, 2), "x smaller": round(orig_bytes / size, 2),
                     "p50 ms (ids)": speed[k][0], "x faster": round(o_ms / speed[k][0], 2),
                     "sentences/s": speed[k][1], "x sentences/s": round(speed[k][1] / o_rate, 1),
                     **{c: q.get(c, "n/a") for c in ("fidelity", "fidelity_docs")},
                     **_agreement(m.embed, base, None if isinstance(m, _Model2Vec) else m.b)})
        log(f"peers: {rows[-1]}")
    return rows, skipped


def table(base, recipes, batch=8, seq=128, runs=7, text=None, log=print) -> str:
    """run() as BENCHMARKS.md's markdown."""
    return markdown(base, *run(base, recipes, batch, seq, runs, text, log), batch, seq)


def markdown(base, rows, skipped, batch, seq) -> str:
    head = (f"### {base.name} and its peers: {measure.machine_line()}\n\nOne process, every model in the same rounds: "
            f"p50 of {batch} x {seq} token ids; sentences/s over both evaluation sets' sentences in batches of 32 "
            f"({pipeline.STRETCH} batches per timed call: tokenize, embed, pool, normalize). neighbour_agreement: "
            "top-5 nearest sentences in common with the original's; similarity_spearman: rank correlation of all "
            "pairwise similarities (both width-free); _docs: the Python docs set.\n\n")
    return head + "\n".join(measure.markdown_rows(rows)) + "\n" + "".join(f"\nSkipped: {s}." for s in skipped) + "\n"
