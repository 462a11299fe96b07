"""What healing and the static end's fit share: a user's healing text read within its limits, the result record,
the fixed dev split of the healing text, the dev batches and metric by which the best state is kept, and the
learning-rate schedule."""
import math
import re
from dataclasses import dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CompressError
from ..measure.evaluate import batches, mean_pool
from ..models.adapters import forward

MAX_HEAL_TEXTS, MAX_HEAL_BYTES = 100_000, 8 << 20  # a user's healing text, checked before it is tokenized
MIN_HEAL_TEXTS = 20
_LINE = re.compile(r"[^\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")  # a line between str.splitlines' breaks


def heal_size(n: int, name: str) -> None:
    """A healing text of n bytes, refused past MAX_HEAL_BYTES (an upload's size is checked before it is copied)."""
    if n > MAX_HEAL_BYTES:
        raise CompressError(f"{name} is {n / 2**20:.1f} MB; healing text is limited to {MAX_HEAL_BYTES >> 20} MB")


def read_heal_text(data: bytes, name: str) -> list[str]:
    """A user's healing text file (its bytes) as its non-empty stripped lines, each limit checked as it is read: at
    most MAX_HEAL_BYTES, UTF-8, at most MAX_HEAL_TEXTS lines (counted while splitting: a file of 8 MB of one-character
    lines never becomes millions of strings), at least MIN_HEAL_TEXTS."""
    heal_size(len(data), name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CompressError(f"{name} is not UTF-8 text") from None
    lines = []
    for m in _LINE.finditer(text):
        if t := m.group().strip():
            if len(lines) == MAX_HEAL_TEXTS:
                raise CompressError(f"{name} has more than {MAX_HEAL_TEXTS:,} lines; healing text is limited to that")
            lines.append(t)
    if len(lines) < MIN_HEAL_TEXTS:
        raise CompressError(f"{name} has {len(lines)} non-empty lines; healing needs at least {MIN_HEAL_TEXTS}")
    return lines


def tick(step: int, steps: int, loss, history: list, elapsed: float, cap: float) -> dict:
    """What healing's progress() hears after a step: the step, of how many, its loss, the last dev check's score and
    its step, the seconds left (to the last step, or to the time cap when that comes first) and before the cap alone,
    and a step's seconds since the steps began (the preparation before them, history[0]'s, counted once: at step 2 it
    made 10 s steps read as 40 s, and the pace warning said 8 of 60 steps would run where 24 did)."""
    per_step = max(0.0, elapsed - history[0]["seconds"]) / max(1, step)
    return {"step": step, "steps": steps, "loss": loss, "dev": history[-1]["dev"], "dev_step": history[-1]["step"],
            "seconds_left": max(0.0, min((steps - step) * per_step, cap - elapsed)),
            "cap_left": max(0.0, cap - elapsed) if math.isfinite(cap) else None, "per_step": per_step}


@dataclass
class HealResult:
    model: nn.Module       # the student, with the best state (by dev metric) loaded
    steps_run: int
    best_step: int         # 0: no step beat the unhealed student, which is kept
    dev_before: float
    dev_after: float       # dev metric of the returned state
    seconds: float
    stopped: bool          # the stop event ended it
    ended: str = "done"    # why it ended: "done" (every step), "Stop", "time cap" or "diverged"
    history: list = field(default_factory=list)  # one dict per dev evaluation: step, loss, dev, seconds
    corpus_sha256: str = ""  # of the texts used (train + dev), newline-joined
    metric: str = ""       # "fidelity" (higher is better) or "next_token_kl" (lower is better)

    def to_dict(self) -> dict:
        """Everything but the model (dataclasses.asdict would deep-copy the model first)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


MAX_DEV = 1_000  # dev texts: measured every tenth of the run, so they bound each check's time


def split_dev(texts: list[str], seen: int | None = None) -> tuple[list[str], list[str]]:
    """Fixed (train, dev): every 10th text is dev (spread over the corpus), 64+ when there are enough, never over half,
    at most seen // 4 (seen: the texts a run trains on): a short run's ~11 dev checks cost no more than its training."""
    n_dev = min(max(64, len(texts) // 10), len(texts) // 2, MAX_DEV, MAX_DEV if seen is None else max(64, seen // 4))
    if n_dev < 1:
        raise CompressError("healing needs at least 2 texts (one to train on, one to pick the best state)")
    step = len(texts) / n_dev
    dev_idx = {int(i * step + step - 1) for i in range(n_dev)}
    return [t for i, t in enumerate(texts) if i not in dev_idx], [texts[i] for i in sorted(dev_idx)]


@torch.no_grad()
def dev_metric(student: nn.Module, teacher, dev: list, ref=None) -> float:
    """Encoders: mean cosine to the teacher's embeddings (fidelity); decoders: next-token KL in nats/token.
    dev: [(ids, mask)] batches; ref: the teacher's pooled embeddings per batch (encoders), to compute once."""
    ad = teacher.adapter
    if teacher.task == "embedding":
        ref = ref or [mean_pool(forward(teacher.model, ad, i, m), m) for i, m in dev]
        cos = [F.cosine_similarity(mean_pool(forward(student, ad, i, m), m), r, dim=-1) for (i, m), r in zip(dev, ref)]
        return float(torch.cat(cos).mean())
    kl, n = 0.0, 0
    for ids, mask in dev:
        lp_t = forward(teacher.model, ad, ids, mask).float().log_softmax(-1)
        lp_s = forward(student, ad, ids, mask).float().log_softmax(-1)
        real = mask.bool()
        kl += float((lp_t.exp() * (lp_t - lp_s)).sum(-1)[real].sum())
        n += int(real.sum())
    return max(0.0, kl / max(1, n))


def dev_batches(teacher, dev_texts):
    """The dev batches, and (encoders) the teacher's pooled embeddings of them, computed once."""
    dev_b = batches(teacher, dev_texts, 64)
    if teacher.task != "embedding":
        return dev_b, None
    with torch.no_grad():
        return dev_b, [mean_pool(forward(teacher.model, teacher.adapter, i, m), m) for i, m in dev_b]


def lr_scale(frac: float, warmup: float) -> float:
    """Linear warmup, then cosine down to 10%, as a fraction of the run done."""
    scale = frac / warmup if frac < warmup else \
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (frac - warmup) / (1 - warmup))))
    return max(scale, 0.01)
