"""Healing of the static end, the Tokenlearn way (Model2Vec's Tokenlearn, van Dongen & Tulkens 2025): the original's
sentence embeddings of the healing texts are computed once (the targets), then the table is fitted to them, pass
after pass over the same targets. A text's embedding is the mean of its tokens' rows (what the static model runs),
the loss 1 - cosine to its target. A step costs a lookup per text, not a transformer's forward (heal.py labels every
batch with the teacher again), so a run sees each text many times and can take big batches.

No per-token targets: a table has no context; matching each row to the transformer's contextual token states (heal.py's
hidden-state loss) pulls the mean away from the sentence's embedding. Frequency weighting: the distilled rows start
SIF-weighted under Zipf (static.py), and the fit learns each row's norm, which is its token's weight in the mean.
PCA: Tokenlearn fits fewer dimensions to its targets reduced by PCA; here a table at a lower rank (emb_rank) restarts
in the targets' principal directions (pca_start), so its sentence embedding stays in the original's width (fidelity
stays defined). Measured against the table's own SVD on MiniLM at 128 / 256 dimensions (BENCHMARKS.md): within 0.007.
The rounding of the steps after healing (int8, a 2/4-bit table) is simulated by the caller, as for heal.py.
"""
import hashlib
import math
import time

import torch
import torch.nn.functional as F

from ..measure.evaluate import batches, mean_pool
from ..models.adapters import forward
from ..serve.cancel import checkpoint, turn
from .factorize import LowRankEmbedding
from .healdev import HealResult, dev_batches, dev_metric, lr_scale, split_dev, tick

BATCH = 256  # texts per step: a step is cheap, a big batch is a steadier cosine
LABEL = 64  # texts per teacher forward while labeling
LABEL_SHARE = 0.8  # of the time cap labeling may take: the fit's steps get the rest
BLOCK = 4096  # texts per labeling block (a multiple of LABEL): a time cap keeps whole blocks


@torch.no_grad()
def targets(teacher, texts: list[str], stop=None, until: float = math.inf,
            progress=None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each text's token ids (its real tokens, as the model reads them) and the teacher's mean-pooled embedding of it,
    (N, C); kept in the teacher's cache by the texts' hash (a second static recipe on the same text labels nothing).
    Labeled in seeded blocks of BLOCK texts (like lengths batched within a block), other sessions' jobs let in between
    batches; at `until` (perf_counter) labeling ends and the blocks labeled so far are returned (not cached): a
    random share of the text, not its shortest. progress({"labeled": k, "texts": n}) before each batch."""
    key = ("tokenlearn_targets", hashlib.sha256("\n".join(texts).encode()).hexdigest())
    if key in teacher.cache:
        return teacher.cache[key]
    perm = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0)).tolist()
    order = [i for b in range(0, len(perm), BLOCK) for i in sorted(perm[b:b + BLOCK], key=lambda i: len(texts[i]))]
    ids_l, ys = [None] * len(texts), None
    for start in range(0, len(texts), LABEL):
        turn()  # a Cancel ends it; anyone waiting for the queue goes first
        if stop is not None and stop.is_set():
            return [], None  # a Stop while labeling: nothing to fit (and nothing kept in the cache)
        if time.perf_counter() >= until:  # the time cap: fit what is labeled, whole blocks
            done = order[:start - start % BLOCK]
            return [ids_l[i] for i in done], (ys[done] if done else None)
        if progress is not None:
            progress({"labeled": start, "texts": len(texts)})
        chunk = order[start:start + LABEL]
        (ids, mask), = batches(teacher, [texts[i] for i in chunk], LABEL)
        y = mean_pool(forward(teacher.model, teacher.adapter, ids, mask), mask)  # (B, C)
        ys = torch.empty(len(texts), y.shape[-1]) if ys is None else ys
        ys[chunk] = y
        for i, row, m in zip(chunk, ids, mask):
            ids_l[i] = row[m.bool()]
    teacher.cache[key] = (ids_l, ys)
    return teacher.cache[key]


@torch.no_grad()
def pca_start(student, y: torch.Tensor) -> None:
    """A low-rank table (rows (V, r) times up (r -> C)) restarted in the targets' r principal directions: up = the
    top r right singular vectors of the targets (N, C) (uncentered PCA: the directions that carry most of them), the
    rows = the table as it was, projected onto them. A full table, fewer targets than r or a target that is not finite
    (a model that outputs NaN: the fit then ends "diverged") leave it as it is."""
    for t in student.modules():
        if isinstance(t, LowRankEmbedding) and len(y) >= t.rank and bool(torch.isfinite(y).all()):
            b = torch.linalg.svd(y.double(), full_matrices=False)[2][:t.rank].to(t.up.weight.device)  # (r, C)
            full = t.up(t.emb.weight).double()
            t.emb.weight.copy_((full @ b.T).to(t.emb.weight.dtype))
            t.up.weight.copy_(b.T.to(t.up.weight.dtype))


def _padded(ids_l: list[torch.Tensor], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask of the chosen texts, right-padded with id 0 (masked out)."""
    rows = [ids_l[i] for i in idx]
    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for k, r in enumerate(rows):
        ids[k, :len(r)], mask[k, :len(r)] = r, 1
    return ids, mask


def fit(student, teacher, texts: list[str], sha: str, steps: int, lr: float, seed: int = 0,
        minutes: float | None = None, progress=None, stop=None, params=None) -> HealResult:
    """heal.heal's contract for a StaticModel (params: the table, trainable): `steps` steps of BATCH texts over the
    labeled training split, the best dev state kept; labeling counts in the time cap and stops on Stop or Cancel."""
    t0, cap = time.perf_counter(), math.inf if minutes is None else 60.0 * minutes
    train, dev_texts = split_dev(texts, steps * BATCH)
    train = train[:max(1, steps * BATCH)]  # a short run labels only what it will read
    dev_b, ref = dev_batches(teacher, dev_texts)
    ids_l, y = targets(teacher, train, stop, t0 + cap * LABEL_SHARE, progress)
    if ids_l:
        pca_start(student, y)
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    dev = dev_before = dev_metric(student, teacher, dev_b, ref)
    best, best_dev, best_step = [p.detach().clone() for p in params], dev, 0
    history = [{"step": 0, "loss": None, "dev": dev, "seconds": round(time.perf_counter() - t0, 2)}]
    stopped = stop is not None and stop.is_set()
    every, order, step, losses = max(10, steps // 10), [], 0, []
    ended = "done" if ids_l or stopped else "time cap"  # (the cap came before a whole block was labeled)
    while step < steps and not stopped and ids_l:
        checkpoint()
        elapsed = time.perf_counter() - t0
        if elapsed >= cap * 0.95:
            ended = "time cap"
            break
        if len(order) < BATCH:  # a fresh seeded shuffle each pass
            order += torch.randperm(len(ids_l), generator=g).tolist()
        idx, order = order[:BATCH], order[BATCH:]
        for grp in opt.param_groups:
            grp["lr"] = lr * lr_scale(max(step / steps, elapsed / cap), 0.05)
        ids, mask = _padded(ids_l, idx)
        loss = 1 - F.cosine_similarity(mean_pool(forward(student, teacher.adapter, ids, mask), mask), y[idx]).mean()
        if not torch.isfinite(loss):
            ended = "diverged"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % every == 0 or step == steps:
            dev = dev_metric(student, teacher, dev_b, ref)
            history.append({"step": step, "loss": sum(losses) / len(losses), "dev": dev,
                            "seconds": round(time.perf_counter() - t0, 2)})
            losses = []
            if dev > best_dev:
                best, best_dev, best_step = [p.detach().clone() for p in params], dev, step
        if progress is not None:
            progress(tick(step, steps, losses[-1] if losses else history[-1]["loss"], history,
                          time.perf_counter() - t0, cap))
        stopped = stop is not None and stop.is_set()
    if losses and not stopped:  # ended by the time cap between two dev checks
        dev = dev_metric(student, teacher, dev_b, ref)
        history.append({"step": step, "loss": sum(losses) / len(losses), "dev": dev,
                        "seconds": round(time.perf_counter() - t0, 2)})
        if dev > best_dev:
            best, best_dev, best_step = [p.detach().clone() for p in params], dev, step
    with torch.no_grad():
        for p, b in zip(params, best):
            p.copy_(b)
    return HealResult(student, step, best_step, dev_before, best_dev, time.perf_counter() - t0, stopped,
                      "Stop" if stopped else ended, history, sha, "fidelity")
