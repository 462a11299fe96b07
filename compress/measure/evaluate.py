"""Quality on held-out data the model never trained on, and sample outputs, per task.

embedding (MiniLM): fidelity = mean cosine between compressed and original sentence embeddings (mean pooling over
the attention mask, L2-normalized) on assets/eval/sentences.tsv; retrieval_overlap = mean |top5_original &
top5_compressed| / 5 over assets/eval/queries.txt. generation (decoders): next_token_kl = KL(original || compressed)
of the next-token distribution in nats/token, mean over the real (unpadded) tokens of the sentences; top1_agreement =
how often both models' most likely next token is the same; Hugging Face decoders (the adapter lists bits_per_token)
also bits_per_token = the model's own cross-entropy on the sentences' next tokens, in bits (the original's too).
A model without a tokenizer is measured on seeded random token ids instead (only indicative). NaN/inf outputs raise
CompressError: a NaN quality number is never returned."""
import copy
import math

import numpy as np
import torch

from ..models.adapters import forward
from ..models.bundle import common
from ..models.pooling import pool
from ..serve import membound
from ..serve.cancel import checkpoint
from . import wordcache
from ..errors import CompressError
from .texts import ASSETS, EVAL_SETS, eval_set, metric_label  # noqa: F401  (all but EVAL_SETS: re-exported)


def random_batches(bundle, n: int, seq: int = 32, batch: int = 64, seed: int = 0) -> list[tuple]:
    """n seeded random sequences as [(ids, mask)] (B, T): the same inputs for the original and every copy."""
    g = torch.Generator().manual_seed(seed)
    v = bundle.vocab_size
    ids = torch.randint(min(1000, v // 2), v, (n, min(seq, bundle.info.get("max_positions", seq))), generator=g)
    return [(ids[i:i + batch], torch.ones_like(ids[i:i + batch])) for i in range(0, n, batch)]


MAX_WORKLOAD_TOKENS = 64 * 256
MAX_CONTEXT = 512  # tokens a sample continuation reads at each step, at most (a prompt is 500 characters at most)
MAX_NEW_TOKENS = 1000  # a continuation's tokens at most: a full forward each
MAX_REF_BYTES = 64 << 20  # the original's next-token log-probs, kept per bundle up to this (tinygpt: 32 MB; 32k: GBs)


def check_shape(bundle, batch: int, seq: int) -> None:
    """The bounds of every batch x seq workload: within the model's positions and the token limit."""
    if batch < 1 or seq < 1 or seq > bundle.info.get("max_positions", 1 << 30):
        raise CompressError(f"batch and seq must be >= 1 and seq <= the model's {bundle.info.get('max_positions')} positions")
    if batch * seq > MAX_WORKLOAD_TOKENS:  # one user's batch 64 x seq 2048 would hold the benchmark lock for minutes
        raise CompressError(f"batch x seq = {batch * seq:,} tokens; a latency workload is limited to "
                            f"{MAX_WORKLOAD_TOKENS:,} (e.g. 64 x 256)")


def workload(bundle, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random token ids (B, T) and an all-ones mask: the same input for every model (latency)."""
    check_shape(bundle, batch, seq)
    return random_batches(bundle, batch, seq, batch, seed=0)[0]


def passages(bundle, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real text in windows (B, T): both evaluation sets' sentences, tokenized as the model reads a sentence (with its
    special tokens), joined into one token stream and cut into batch rows of seq tokens, the stream repeated when it
    is shorter than batch x seq; an all-ones mask. Long real text at a chosen length, where the sentences workload
    has its own short lengths."""
    check_shape(bundle, batch, seq)
    if bundle.tokenizer is None:
        raise CompressError("this model has no tokenizer, so there is no real text to time: use the ids workload")
    enc = bundle.tokenizer(eval_sentences(), padding=True, truncation=False, return_tensors="pt")
    stream = enc["input_ids"][enc["attention_mask"].bool()].tolist()  # (row by row: the sentences in order)
    ids = torch.tensor(stream * -(-batch * seq // len(stream)))[:batch * seq].view(batch, seq)
    ids = ids.clamp_(0, bundle.vocab_size - 1)  # (a pruned vocabulary maps ids inside the model: the original's range)
    return ids, torch.ones_like(ids)


def shaped(bundle, kind: str, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of a batch x seq workload: seeded random ids ("ids") or real text in windows ("passages")."""
    return (passages if kind == "passages" else workload)(bundle, batch, seq)


def eval_sentences() -> list[str]:
    """The sentences of every evaluation set, in order."""
    return [s for name in EVAL_SETS for s in eval_set(name)[0]]


def sentence_groups(batch: int = 32) -> list[list[str]]:
    """The sentences of every evaluation set, in batches: the real-text latency workload."""
    texts = eval_sentences()
    return [texts[i:i + batch] for i in range(0, len(texts), batch)]


def sentence_count() -> int:
    return sum(map(len, sentence_groups()))


def batches(bundle, texts: list[str], batch: int = 64) -> list[tuple]:
    """[(ids, mask)] of the texts; without a tokenizer, as many seeded random sequences (seeded by count)."""
    if bundle.tokenizer is None:
        return random_batches(bundle, len(texts), batch=batch, seed=len(texts))
    max_len = min(128, bundle.info.get("max_positions", 128))
    fast, out = _backend(bundle, max_len), []
    for i in range(0, len(texts), batch):  # a Cancel is heard between batches (a healing text of 8 MB is many)
        checkpoint()
        chunk = texts[i:i + batch]
        if callable(fast):  # a word cache or the Rust tokenizer itself: the same ids as the call below, faster
            out.append(fast(chunk))
        elif fast is not None:
            enc = fast.encode_batch(chunk)
            out.append(tuple(torch.from_numpy(np.array([getattr(e, k) for e in enc], dtype=np.int64))
                             for k in ("ids", "attention_mask")))
        else:
            e = bundle.tokenizer(chunk, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            out.append((e["input_ids"], e["attention_mask"]))
    return out


def _backend(bundle, max_len: int):
    """A fast tokenizer's Rust tokenizer, set to pad to the longest and cut at max_len (a copy, kept per bundle);
    for BERT's WordPiece pipeline, a word cache over it (compress/measure/wordcache.py) once it gave the same ids on every
    evaluation sentence."""
    from transformers import PreTrainedTokenizerFast
    tok = bundle.tokenizer
    if not isinstance(tok, PreTrainedTokenizerFast) or tok.pad_token_id is None or tok.padding_side != "right":
        return None
    key = ("backend_tokenizer", max_len)
    if key not in bundle.cache:
        bt = copy.deepcopy(tok.backend_tokenizer)
        bt.enable_padding(pad_id=tok.pad_token_id, pad_token=tok.pad_token, pad_type_id=tok.pad_token_type_id)
        bt.enable_truncation(max_len)
        bundle.cache[key] = wordcache.over(bt, max_len, tok.pad_token_id, sentence_groups(32))
    return bundle.cache[key]


def mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C), (B, T) -> (B, C): the mean over real (unmasked) tokens."""
    return pool(h, mask, "mean")


def token_kl(lp_ref: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
    """(B, T, V) log-probs -> (B, T) KL(ref || other) per position, in nats."""
    return (lp_ref.exp() * (lp_ref - lp)).sum(-1)


def _finite(x: torch.Tensor, bundle) -> torch.Tensor:
    if not torch.isfinite(x).all():
        what = "the compressed model" if bundle.recipe is not None else "the model"
        raise CompressError(f"{what} outputs NaN or infinite values; its quality cannot be measured")
    return x


@torch.no_grad()
def embed(bundle, texts: list[str], batch: int = 64) -> torch.Tensor:
    """(N, C) L2-normalized sentence embeddings, float32: mean-pooled, or as the upload's sentence-transformers
    Pooling says (info["pooling"]: mean, cls or max)."""
    out = []
    for ids, mask in batches(bundle, texts, batch):  # a NaN or inf anywhere in (B, T, C) reaches the pooled mean
        h = forward(bundle.model, bundle.adapter, ids, mask).float()
        out.append(torch.nn.functional.normalize(pool(h, mask, bundle.info.get("pooling", "mean")), dim=-1))
    return _finite(torch.cat(out), bundle)


def eval_embeddings(bundle, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of an evaluation set's sentences and queries, computed once per bundle."""
    key = f"eval_emb_{name}"
    if key not in bundle.cache:
        sentences, _, queries = eval_set(name)
        bundle.cache[key] = (embed(bundle, sentences), embed(bundle, queries))
    return bundle.cache[key]


def _top5_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean |top5 of a row in a & in b| / 5 over the rows of two (N, M) score matrices."""
    top_a, top_b = a.topk(5).indices, b.topk(5).indices
    return sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(top_a, top_b)) / (5 * len(top_a))


def neighbours(emb: torch.Tensor, ref: torch.Tensor) -> dict:
    """Agreement of two embeddings of the same sentences that may differ in width (a cosine between them is then
    not defined): top-5 neighbour agreement (each sentence's 5 nearest others) and the Spearman correlation of all
    pairwise similarities."""
    from scipy.stats import spearmanr
    sim, sim_ref = emb @ emb.T, ref @ ref.T  # (N, N)
    eye = torch.eye(len(emb), dtype=torch.bool)
    upper = torch.triu(torch.ones_like(eye), 1)
    rho = spearmanr(sim[upper].numpy(), sim_ref[upper].numpy()).statistic
    return {"neighbour_agreement": round(_top5_overlap(sim.masked_fill(eye, -2), sim_ref.masked_fill(eye, -2)), 4),
            "similarity_spearman": round(float(rho), 4)}


def _set_quality(bundle, original, name: str) -> dict:
    ref_s, ref_q = eval_embeddings(original, name)
    emb_s, emb_q = eval_embeddings(bundle, name)
    if emb_s.shape[1] != ref_s.shape[1]:  # another width (a static model): no cosine to the original
        return neighbours(emb_s, ref_s)
    return {"fidelity": round(float((emb_s * ref_s).sum(-1).mean()), 4),
            "retrieval_overlap": round(_top5_overlap(emb_q @ emb_s.T, ref_q @ ref_s.T), 4)}


def quality(bundle, original) -> dict:
    """Quality of bundle against the uncompressed original, per task (module docstring). Encoders: on the project's
    set (fidelity, retrieval_overlap) and on every other set, its name appended (fidelity_docs, ...). Measured once
    per pair and kept in the bundle's cache (a bundle is never changed after it is made): the original's own, and the
    peer's or a cached recipe's at every later Apply, are not measured again."""
    key = ("quality", original.name, original.content_hash)
    if key not in bundle.cache:
        bundle.cache[key] = _quality(bundle, original)
    return dict(bundle.cache[key])


def _quality(bundle, original) -> dict:
    if bundle.task == "generation":
        return {**bundle.adapter.extra_quality(bundle), **next_token_agreement(bundle, original)}
    if bundle.task != "embedding":
        raise CompressError(f"no quality metric for task {bundle.task!r}")
    out = {}
    for name in EVAL_SETS:
        suffix = "" if name == "project" else f"_{name}"
        out.update({k + suffix: v for k, v in _set_quality(bundle, original, name).items()})
    return out


@torch.no_grad()
def next_token_agreement(bundle, original) -> dict:
    """Decoders: next-token KL(original || compressed) in nats/token and top-1 agreement over real tokens; where the
    adapter lists it, bits_per_token: the compressed model's cross-entropy on the next real token, in bits."""
    original = common(original, bundle)  # (fewer positions: the original's next-token refs of shorter windows)
    kl, agree, n, nll, m = 0.0, 0, 0, 0.0, 0
    batch = max(1, min(64, (1 << 25) // (128 * original.vocab_size)))  # (B, T, V) log-probs stay near 128 MB
    refs = original.cache.get(("next_token_ref", batch))
    keep = []
    for i, (ids, mask) in enumerate(batches(original, eval_set()[0], batch)):
        lp_ref = refs[i] if refs else \
            _finite(forward(original.model, original.adapter, ids, mask).float(), original).log_softmax(-1)
        lp = lp_ref if bundle is original else \
            _finite(forward(bundle.model, bundle.adapter, ids, mask).float(), bundle).log_softmax(-1)  # (B, T, V)
        if keep is not None and not refs:  # the original's, kept for the next model while they stay small
            keep.append(lp_ref)
            keep = keep if sum(x.numel() for x in keep) * 4 <= MAX_REF_BYTES else None
        real = mask.bool()                                                                            # (B, T)
        kl += float(token_kl(lp_ref, lp)[real].sum())
        agree += int((lp_ref.argmax(-1) == lp.argmax(-1))[real].sum())
        n += int(real.sum())
        pairs = real[:, :-1] & real[:, 1:]  # position t predicts token t + 1: both real
        nll -= float(lp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0][pairs].sum())
        m += int(pairs.sum())
    if keep and not refs:
        original.cache[("next_token_ref", batch)] = keep
    out = {"next_token_kl": round(max(0.0, kl / n), 6), "top1_agreement": round(agree / n, 4)}
    if "bits_per_token" in bundle.adapter.extra_metrics:
        out["bits_per_token"] = round(nll / max(1, m) / math.log(2), 4)
    return out


@torch.no_grad()
def complete(bundle, prompt: str, max_new_tokens: int = 20, greedy: bool = True, seed: int = 0,
             temperature: float = 0.8, top_k: int = 40) -> str:
    """Sample output for decoders: a greedy or seeded sampled continuation of a prompt (a full forward per token)."""
    if bundle.tokenizer is None:
        raise CompressError("this model has no tokenizer, so it cannot continue a text")
    if type(max_new_tokens) is not int or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise CompressError(f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS}, got {max_new_tokens!r}")
    if not greedy and not (type(top_k) is int and top_k >= 1 and type(temperature) in (int, float)
                           and 0 < temperature < float("inf")):
        raise CompressError(f"sampling takes top_k >= 1 and a temperature > 0, finite; got {top_k!r}, {temperature!r}")
    context = min(bundle.info["max_positions"], MAX_CONTEXT)  # what each token's forward reads, at most
    membound.check("sample", bundle.model, bundle.name,
                   extra_mb=bundle.applied.get("attention_mb_per_token", 0.0) * context)  # a variant's activations
    ids = bundle.tokenizer(_unicode(prompt), return_tensors="pt")["input_ids"][:, -context:]  # (1, T): a tokenizer
    start = ids.shape[1]  # may make 128,000 ids of a 500-character prompt
    if start == 0:
        raise CompressError("give a prompt to continue")
    g = torch.Generator().manual_seed(seed)
    for _ in range(max_new_tokens):
        logits = _finite(forward(bundle.model, bundle.adapter, ids[:, -context:])[:, -1].float(), bundle)  # (1, V)
        if greedy:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            logits[logits < logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]] = float("-inf")
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=g)  # (1, 1)
        ids = torch.cat([ids, nxt], dim=1)
    return bundle.tokenizer.decode(ids[0, start:], skip_special_tokens=True)


def search(bundle, query: str, name: str = "project", k: int = 5) -> list[dict]:
    """Sample output for embeddings: the top-k sentences of an evaluation set for a query."""
    if bundle.tokenizer is None:
        raise CompressError("this model has no tokenizer, so it cannot search texts")
    membound.check("sample", bundle.model, bundle.name)
    sentences, topics, _ = eval_set(name)
    scores = eval_embeddings(bundle, name)[0] @ embed(bundle, [_unicode(query)])[0]
    top = scores.topk(k)
    return [{"sentence": sentences[i], "topic": topics[i], "score": round(float(s), 4)}
            for s, i in zip(top.values.tolist(), top.indices.tolist())]


def _unicode(text) -> str:
    """A user's text as the tokenizer takes it: a str that is valid Unicode (a lone surrogate is not)."""
    if not isinstance(text, str):
        raise CompressError(f"the text must be a string, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CompressError("the text holds characters that are not valid Unicode (a lone surrogate)") from None
    return text
