"""Quality on held-out data the model never trained on, and sample outputs, per task.

embedding (MiniLM): fidelity = mean cosine between compressed and original sentence embeddings
(mean pooling over the attention mask, L2-normalized) on assets/eval/sentences.tsv;
retrieval_overlap = mean |top5_original & top5_compressed| / 5 over assets/eval/queries.txt.
"""
import csv
from functools import lru_cache
from pathlib import Path

import torch

from .adapters import forward
from .recipe import CompressError

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@lru_cache(maxsize=1)
def eval_set() -> tuple[list[str], list[str], list[str]]:
    """(sentences, topics, queries) of the held-out evaluation set."""
    with open(ASSETS / "eval" / "sentences.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    queries = [q.strip() for q in (ASSETS / "eval" / "queries.txt").read_text(encoding="utf-8").splitlines() if q.strip()]
    return [r["sentence"] for r in rows], [r["topic"] for r in rows], queries


@torch.no_grad()
def embed(bundle, texts: list[str], batch: int = 64) -> torch.Tensor:
    """(N, C) L2-normalized mean-pooled sentence embeddings, float32."""
    out = []
    for i in range(0, len(texts), batch):
        enc = bundle.tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
        h = forward(bundle.model, bundle.adapter, enc["input_ids"], enc["attention_mask"]).float()  # (B, T, C)
        m = enc["attention_mask"].unsqueeze(-1).float()                                           # (B, T, 1)
        out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1))
    e = torch.cat(out)
    if not torch.isfinite(e).all():
        raise CompressError("the model produces NaN or infinite outputs; its quality cannot be measured")
    return e


def _eval_embeddings(bundle) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of the evaluation sentences and queries, computed once per bundle."""
    if "eval_emb" not in bundle.cache:
        sentences, _, queries = eval_set()
        bundle.cache["eval_emb"] = (embed(bundle, sentences), embed(bundle, queries))
    return bundle.cache["eval_emb"]


def quality(bundle, original) -> dict:
    if bundle.task != "embedding":
        raise CompressError(f"no quality metric for task {bundle.task!r}")
    ref_s, ref_q = _eval_embeddings(original)
    emb_s, emb_q = _eval_embeddings(bundle)
    top_ref = (ref_q @ ref_s.T).topk(5).indices
    top_new = (emb_q @ emb_s.T).topk(5).indices
    overlap = [len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(top_ref, top_new)]
    return {"fidelity": round(float((emb_s * ref_s).sum(-1).mean()), 4),
            "retrieval_overlap": round(sum(overlap) / len(overlap), 4)}


def search(bundle, query: str, k: int = 5) -> list[dict]:
    """Sample output for embeddings: the top-k evaluation sentences for a query."""
    sentences, topics, _ = eval_set()
    scores = _eval_embeddings(bundle)[0] @ embed(bundle, [query])[0]
    top = scores.topk(k)
    return [{"sentence": sentences[i], "topic": topics[i], "score": round(float(s), 4)}
            for s, i in zip(top.values.tolist(), top.indices.tolist())]
