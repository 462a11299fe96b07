"""A verdict for quality, next to size and speed: kept / some loss / large loss, by thresholds stated here (higher is better for each) (and shown
with the verdict), with what to try next. One entry per quality metric; the first metric a result has decides. And
where an encoder's fidelity loses: the sentences that moved most (farthest)."""
from dataclasses import dataclass

from .evaluate import eval_embeddings, eval_set


@dataclass(frozen=True)
class Threshold:
    metric: str
    kept: float       # at or past this: kept
    some: float       # at or past this: some loss; short of it: large loss
    what: str = ""    # the metric in words, for the stated thresholds


THRESHOLDS = [  # why these numbers: int8 (no visible change in search results) keeps >= 0.97 fidelity and 0.99 top-1
    Threshold("fidelity", 0.95, 0.85, what="fidelity is the cosine to the original's sentence embeddings"),
    Threshold("neighbour_agreement", 0.8, 0.5, what="neighbour agreement: each sentence's 5 nearest others kept"),
    Threshold("top1_agreement", 0.95, 0.8, what="top-1 agreement: next tokens both models rank first"),
]
HINTS = {"kept": "", "some loss": "Healing (a few hundred steps) usually wins most of it back.",
         "large loss": "Heal it (what is cut or approximated was trained into the rest of the model: the article "
                       "heals after factorizing and pruning, the survey's efficient attention heals too), or pick a "
                       "gentler recipe (a sweep on the Trade-offs page draws the frontier)."}
HEALED = {"kept": "", "some loss": "It was healed: more steps (and a longer time cap) may win more back.",
          "large loss": "It was healed: heal longer (more steps, a longer time cap), or pick a gentler recipe (a sweep "
                        "on the Trade-offs page draws the frontier)."}


def verdict(quality: dict, healed: bool = False) -> dict | None:
    """{"verdict", "metric", "value", "rule", "hint"} for a result's quality numbers, or None if none is judged;
    healed: the hint says to heal longer rather than to heal."""
    for t in THRESHOLDS:
        v = quality.get(t.metric)
        if isinstance(v, (int, float)) and v == v:
            word = "kept" if v >= t.kept else "some loss" if v >= t.some else "large loss"
            rule = f"kept at >= {t.kept}, some loss at >= {t.some}, large loss below; {t.what}"
            hint = (HEALED if healed else HINTS)[word]
            return {"verdict": word, "metric": t.metric, "value": v, "rule": rule, "hint": hint}
    return None


def farthest(bundle, original, name: str = "project", n: int = 5) -> list[dict]:
    """The n sentences of an evaluation set whose embedding moved most from the original's, lowest cosine first
    ([{"sentence", "cosine"}]; [] where the widths differ: no cosine): what a mean hides (the 20x preset: the 27% of
    our sentences that read a dropped token's neighbour lose 0.031 each, BENCHMARKS)."""
    ref, emb = eval_embeddings(original, name)[0], eval_embeddings(bundle, name)[0]
    if emb.shape[1] != ref.shape[1]:
        return []
    cos, sentences = (emb * ref).sum(-1), eval_set(name)[0]
    return [{"sentence": sentences[i], "cosine": round(float(cos[i]), 4)} for i in cos.argsort()[:n].tolist()]
