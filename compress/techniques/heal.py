"""Healing: a short distillation from the original (teacher) into a compressed float student, in place.

encoders: loss = 1 - cos(mean-pooled student, teacher embedding)
          + hidden_weight * mean over layers of |h_s - h_t|^2 / |h_t|^2 (real tokens only)
          + relation_weight * the last block's attention relations (MiniLM v2: relations.py; heal_relations)
decoders: loss = KL(teacher || student) of the next-token distributions (temperature 1)
          + ce_weight * LM cross-entropy on the text
Only the transformer blocks train (and a factorized word table, or a product-quantized one's codebooks when asked:
pq.trainable_books); the rest of the embeddings, final norm, pooler and LM head stay frozen. A fixed dev split of the
healing text (never the evaluation set) is measured every eval_every steps; the best state by that dev metric is loaded
into the student at the end, so healing never makes it worse. Runs before quantization: the student must be a float
model (nn.Linear / LowRankLinear); when a step that rounds weights follows (int8, int4: the table's `simulate`), the
heal step runs it inside that rounding, so it trains (and picks its best state) on the model quantization will run.
With fewer layers (layers.py) each student block's hidden state is matched to the teacher block it came from; with
token pooling (pool.py) only the blocks before it (the later ones are shorter: the output loss trains them).
The static end (a StaticModel) is fitted instead to the teacher's embeddings, labeled once (tokenlearn.py).
Defaults, measured on MiniLM at Recipe(rank_mode="ratio", rank=0.5), 300 steps, batch 32, 2 CPU threads (held-out
fidelity 0.706 unhealed; ~80 s on an idle 2-core box): lr 5e-5 / 1e-4 / 3e-4 gave 0.901 / 0.913 / 0.926 without hidden-
state matching and 0.907 / 0.921 / 0.936 with hidden_weight 1; at lr 3e-4 hidden_weight 3 gave 0.940 (10: 0.944 but
lower retrieval overlap), 1000 steps 0.954. Training only the factorized layers gave 0.930; also training the
embeddings 0.942, 25% slower, lower retrieval overlap. (Joining texts, mix 0.5, came later: 0.9395 here; it helps long
runs of heavier recipes, see mix below.) TinyGPT at ratio 0.25: next-token KL 0.162 -> 0.041 (lr 3e-4) / 0.033 (1e-3);
LM cross-entropy (ce_weight 0.1) lowered bits/char a little (1.735 -> 1.725) but raised the KL: off by default.
"""
import contextlib
import hashlib
import math
import time
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.adapters import forward
from ..models.bundle import with_positions
from ..serve.cancel import checkpoint
from ..measure.evaluate import batches, mean_pool, token_kl
from ..errors import CompressError
from ..measure.general import healing_text
from . import pq, relations
from .healdev import MAX_HEAL_BYTES, MAX_HEAL_TEXTS, HealResult, dev_batches, dev_metric, lr_scale, split_dev, tick
from .static import StaticModel
from .tokenlearn import fit as fit_static

TEACH = ("Healing: a short distillation from the original (teacher) into the compressed model before quantization: it "
         "learns to give the original's outputs again on the healing text (styles: ours, Python's reference, "
         "docstrings; general: WordNet's glosses as sentences; both; all: both and FOLDOC's computing sentences; "
         "tinygpt: its training split). An encoder matches the original's sentence embedding and, weighted by the "
         "hidden-state weight, each kept block's hidden states to those of the original block it came from (keep "
         "blocks 0, 4, 5 of six: they learn blocks 0, 4, 5's). A dev split's best state is kept. With int8 or int4 "
         "chosen it trains with their rounding simulated, so it learns the model they will run. Attention relations "
         "(MiniLM v2): the last block also learns the original's query, key and value self-relations. Runs in the "
         "background; Stop keeps the best state so far.")



HEAL_TOKENS = 32 * 128  # a healing batch's tokens at most: heal()'s batch of 32 texts, each cut at 128 tokens


def heal_texts(teacher, which: str = "styles") -> list[str]:
    """Default healing text: the family's own (TinyGPT: its training split in windows), else the recipe's heal_text
    (measure/general.py: styles, general or both). Never an evaluation set."""
    own = teacher.adapter.heal_texts()
    return own if own is not None else healing_text(which)


def calibration_batches(bundle, n: int = 64) -> list[tuple]:
    """A few batches of the healing text (never the evaluation set) for data-driven scores (layers, heads)."""
    return batches(bundle, heal_texts(bundle)[:n], batch=16)


def trainable(model: nn.Module, adapter) -> list[tuple[str, nn.Parameter]]:
    """The parameters healing may change: everything inside the transformer blocks, and a factorized
    word-embedding table (its SVD truncation is an approximation healing can repair); the static end: its table."""
    from .factorize import LowRankEmbedding
    from .pq import PQEmbedding
    emb = model.get_submodule(adapter.word_embeddings)
    table = [(f"{adapter.word_embeddings}.{n}", p) for n, p in emb.named_parameters()]
    if isinstance(model, StaticModel):  # no blocks: the table is all there is, and its attention layer if any
        return table + ([(f"mix.{n}", p) for n, p in model.mix.named_parameters()] if model.mix is not None else [])
    blocks = [(f"{adapter.blocks}.{n}", p) for n, p in adapter.block_list(model).named_parameters()]
    return blocks + (table if isinstance(emb, (LowRankEmbedding, PQEmbedding)) else [])  # PQ: its codebooks if made
    #  trainable (pq.trainable_books), else it has no parameters


def _mix(chosen: list[str], pool: list[str], p: float, g) -> list[str]:
    """Distillation needs inputs, not labels: with probability p a text becomes the start of itself and the
    end of another (cut at random words), a new sentence the teacher labels (more text than the corpus has)."""
    out = []
    for t in chosen:
        if float(torch.rand(1, generator=g)) < p:
            a, b = t.split(), pool[int(torch.randint(len(pool), (1,), generator=g))].split()
            i, j = (int(torch.randint(1, max(2, len(w)), (1,), generator=g)) for w in (a, b))
            t = " ".join(a[:i] + b[j:])
        out.append(t)
    return out


def _hidden(model, ids, mask):  # encoders: the per-layer hidden states, embeddings output excluded
    return model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1:]


def _embedding_loss(student, teacher, ids, mask, hidden_weight):
    ad = teacher.adapter
    if hidden_weight:
        with torch.no_grad():
            hs_t = _hidden(teacher.model, ids, mask)
        hs_s = _hidden(student, ids, mask)
        h_t, h_s = hs_t[-1], (hs_s[-1] if hs_s[-1].shape == hs_t[-1].shape else forward(student, ad, ids, mask))
        if len(hs_s) < len(hs_t):  # fewer layers: each student block matches the teacher block it came from
            hs_t = [hs_t[i] for i in student.kept_blocks]
    else:
        with torch.no_grad():
            h_t = forward(teacher.model, ad, ids, mask)
        h_s = forward(student, ad, ids, mask)
    loss = 1 - F.cosine_similarity(mean_pool(h_s, mask), mean_pool(h_t, mask), dim=-1).mean()
    if hidden_weight:
        real = mask.bool()  # (B, T): padding positions carry no meaning, leave them out
        rel = [((s - t)[real].pow(2).mean() / t[real].pow(2).mean()) for s, t in zip(hs_s, hs_t)
               if s.shape == t.shape]
        loss = loss + hidden_weight * torch.stack(rel).mean()
    return loss


def _loss(student, teacher, ids, mask, hidden_weight, ce_weight, relation_weight=0.0):
    ad = teacher.adapter
    if teacher.task == "embedding":
        with contextlib.ExitStack() as stack:  # relations: the last blocks' q, k, v outputs of the forwards below
            rel_t, rel_s = (stack.enter_context(relations.capture(m, ad)) if relation_weight else None
                            for m in (teacher.model, student))
            loss = _embedding_loss(student, teacher, ids, mask, hidden_weight)
        return loss + relation_weight * relations.loss(rel_s, rel_t, mask) if relation_weight else loss
    with torch.no_grad():
        lp_t = forward(teacher.model, ad, ids, mask).float().log_softmax(-1)  # (B, T, V)
    logits = forward(student, ad, ids, mask).float()
    real = mask.bool()
    loss = token_kl(lp_t, logits.log_softmax(-1))[real].mean()  # KL(teacher || student) per real token
    if ce_weight:  # position t predicts token t+1; only where both are real
        tgt = ids[:, 1:].masked_fill(~real[:, 1:], -100)
        loss = loss + ce_weight * F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tgt.reshape(-1))
    return loss


def heal(student: nn.Module, teacher, texts: list[str] | None = None, steps: int = 300, lr: float = 3e-4,
         seed: int = 0, minutes: float | None = None, batch: int = 32, progress=None, stop=None,
         hidden_weight: float = 3.0, ce_weight: float = 0.0, eval_every: int | None = None,
         warmup: float = 0.05, mix: float = 0.5, relation_weight: float = 0.0) -> HealResult:
    """Distill teacher (the original ModelBundle) into student (its compressed float model), in place.

    Stops after `steps` steps or `minutes` (a cap, final dev check included), or when `stop` (a threading.Event) is
    set; always returns with the best dev state loaded. progress(healdev.tick's dict) is called
    after every step. texts: None = heal_texts(teacher). hidden_weight applies to encoders, ce_weight to decoders; seed
    fixes the batch order; relation_weight (encoders): relations.py. mix (encoders): the chance a training text is
    joined to the end of another (_mix): at 800 steps on a 10x MiniLM recipe 0.5 gave held-out fidelity 0.857 vs 0.852
    without (dev 0.883 vs 0.878). Over 60 lines: one loop sharing its locals."""
    t0 = time.perf_counter()
    if teacher.tokenizer is None:
        raise CompressError("this model has no tokenizer, so there is no text to heal it on")
    if steps < 0 or batch < 1 or lr <= 0:
        raise CompressError("healing needs steps >= 0, batch >= 1 and a positive learning rate")
    cap = math.inf if minutes is None else 60.0 * minutes
    texts = list(texts) if texts is not None else heal_texts(teacher)
    if len(texts) > MAX_HEAL_TEXTS or sum(map(len, texts)) > MAX_HEAL_BYTES:  # checked before any tokenizing
        raise CompressError(f"healing text is limited to {MAX_HEAL_TEXTS:,} lines and {MAX_HEAL_BYTES // 2**20} MB")
    sha = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    params = [p for _, p in trainable(student, teacher.adapter)]
    if isinstance(student, StaticModel):  # the static end: fitted to the teacher's embeddings, labeled once
        return fit_static(student, teacher, texts, sha, steps, lr, seed, minutes, progress, stop, params)
    train, dev_texts = split_dev(texts, steps * batch)
    dev_b, ref = dev_batches(teacher, dev_texts)
    better = (lambda a, b: a > b) if teacher.task == "embedding" else (lambda a, b: a < b)
    eval_every = eval_every or max(10, steps // 10)
    was_grad = {p: p.requires_grad for p in student.parameters()}
    for p in student.parameters():  # only the trainable ones: everything else stays as the original had it
        p.requires_grad_(any(p is q for q in params))
    was_training = student.training
    student.eval()  # dropout off: the student learns exactly the function it will run
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # decay would pull the factors off the SVD init

    def evaluate_dev():
        return dev_metric(student, teacher, dev_b, ref)
    dev = dev_before = evaluate_dev()
    best, best_dev, best_step = [p.detach().clone() for p in params], dev_before, 0
    eval_secs = time.perf_counter() - t0  # the final dev check must fit in the cap too
    history = [{"step": 0, "loss": None, "dev": dev_before, "seconds": round(eval_secs, 2)}]
    order, pos, step, stopped, losses, t_eval, ended = [], 0, 0, False, [], time.perf_counter(), "done"
    try:
        while step < steps:
            checkpoint()  # a Cancel drops the run (a Stop, the `stop` event, keeps its best state: below)
            elapsed = time.perf_counter() - t0
            stopped = stop is not None and stop.is_set()
            if stopped or elapsed + 2 * eval_secs >= cap:
                ended = "Stop" if stopped else "time cap"
                break
            for grp in opt.param_groups:  # over whichever ends first: the steps or the time cap
                grp["lr"] = lr * lr_scale(max(step / steps, elapsed / cap), warmup)
            if pos + batch > len(order):  # a fresh seeded shuffle each epoch
                order, pos = torch.randperm(len(train), generator=g).tolist(), 0
            chosen = [train[i] for i in order[pos:pos + batch]]
            if mix and teacher.task == "embedding":
                chosen = _mix(chosen, train, mix, g)
            ids, mask = batches(teacher, chosen, batch)[0]
            pos += batch
            loss = _loss(student, teacher, ids, mask, hidden_weight, ce_weight, relation_weight)
            if not torch.isfinite(loss):
                ended = "diverged"  # the best state so far is restored below
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            last = loss.item()
            losses.append(last)
            # dev checks every eval_every steps, and every tenth of the time cap (so a stop keeps recent work)
            if step % eval_every == 0 or step == steps or time.perf_counter() - t_eval >= cap / 10:
                t = t_eval = time.perf_counter()
                dev = evaluate_dev()
                eval_secs = time.perf_counter() - t
                history.append({"step": step, "loss": sum(losses) / len(losses), "dev": dev,
                                "seconds": round(time.perf_counter() - t0, 2)})
                losses = []
                if better(dev, best_dev):
                    best, best_dev, best_step = [p.detach().clone() for p in params], dev, step
            if progress is not None:
                progress(tick(step, steps, last, history, time.perf_counter() - t0, cap))
        if losses and not stopped:  # ended by the time cap (or divergence) between two dev checks
            dev = evaluate_dev()
            history.append({"step": step, "loss": sum(losses) / len(losses), "dev": dev,
                            "seconds": round(time.perf_counter() - t0, 2)})
            if better(dev, best_dev):
                best, best_dev, best_step = [p.detach().clone() for p in params], dev, step
    finally:
        with torch.no_grad():
            for p, b in zip(params, best):
                p.copy_(b)
        for p, req in was_grad.items():
            p.requires_grad_(req)
        student.train(was_training)
    return HealResult(student, step, best_step, dev_before, best_dev, time.perf_counter() - t0, stopped, ended,
                      history, sha, "fidelity" if teacher.task == "embedding" else "next_token_kl")


def left(ctx) -> float | None:
    """The minutes of the cap the steps before healing left it (sensitivity, a static table's distillation)."""
    return None if ctx.minutes is None else max(0.0, ctx.minutes - (time.perf_counter() - ctx.started) / 60)


def refuse(bundle, r) -> str | None:
    """Why this recipe cannot heal as asked (None: it can)."""
    if r.heal_steps and bundle is not None and bundle.tokenizer is None:
        return "this model has no tokenizer, so there is no text to heal it on"
    if r.heal_steps and r.heal_hidden != 3 and (r.static or bundle is not None and bundle.task != "embedding"):
        return ("the hidden-state weight is for healing an encoder's blocks (a decoder heals on next-token KL, a "
                "static table is fitted to the original's embeddings): leave it at 3")
    return relations.refuse(bundle, r)


def heal_step(ctx, r, rounding: list) -> None:
    """The table's heal step: ctx.model healed inside the rounding of the steps after it (rounding: those steps)."""
    digest = hashlib.sha256("\n".join(ctx.texts).encode()).hexdigest() if ctx.texts else ""
    if r.heal_corpus and r.heal_corpus != digest:
        raise CompressError("this recipe was healed on a text that was not given (its sha256 differs); give the same "
                            "text or clear heal_corpus")
    ctx.recipe = replace(r, heal_corpus=digest)
    with contextlib.ExitStack() as stack:  # heal the model that quantization will run
        for s in rounding:
            stack.enter_context(s.simulate(ctx.model, ctx.base.adapter, r))
        if r.emb_pq_heal:
            stack.enter_context(pq.trainable_books(ctx.model, ctx.base.adapter))
        texts = ctx.texts or heal_texts(ctx.base, r.heal_text)  # a given text wins
        teacher = with_positions(ctx.base, r.positions)  # (a cut position table, positions.py: texts cut for both)
        ctx.applied["heal"] = heal(ctx.model, teacher, texts, steps=r.heal_steps, lr=r.heal_lr, seed=r.heal_seed,
                                   minutes=left(ctx), progress=ctx.progress, stop=ctx.stop,
                                   hidden_weight=r.heal_hidden,
                                   relation_weight=relations.WEIGHT if r.heal_relations else 0.0).to_dict()
