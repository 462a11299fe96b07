"""Vocabulary pruning: the word table keeps n rows, those of the tokens the healing text is made of (most frequent
first; then the vocabulary's own order, which for WordPiece and BPE is roughly by frequency), and every other token
reads the kept row nearest its own (cosine, in the original table). The table is most of a small encoder: MiniLM's
healing corpus uses 7,486 of its 30,522 tokens. A token's ids are mapped at the model's entrance (a buffer of one
int16 / int32 per token, saved with the weights), so the table's other techniques (bits, rank, int8) apply to the
smaller table as to the full one. Encoders only: a decoder's output layer scores every token of the vocabulary.

keep = "english": the rows are ranked by the healing text's token frequencies plus English's (each a share of its
whole): wordfreq's ENGLISH most frequent English words (wordfreq 3.1.1, code Apache-2.0, data CC BY-SA 4.0: Wikipedia,
subtitles, news, books, web text), each word's frequency added to each of its tokens. Tokens of general prose the
healing text never used then keep their own rows (MiniLM at 0.36, unhealed: 0.908 / 0.925 against 0.900 / 0.917 by
the text alone, and 0.871 against 0.860 on fortune quotes, prose never tuned on; BENCHMARKS.md).

cover = "resplit": a dropped token is re-split into kept pieces (greedy longest match over the kept vocabulary, as
WordPiece does, with its continuation prefix "##"; BPE / Unigram: plain substrings) and reads the mean of their rows:
the index holds CAP rows per token (-1: none) and the entrance passes the model inputs_embeds. The alphabet (every
character of the healing text's tokens, both forms) is kept first so such tokens re-split; a token needing more than
CAP pieces, or a character outside the alphabet (MiniLM: Cyrillic, CJK... single characters), reads its nearest row.
Re-tokenizing the text with the kept vocabulary would be truer, but it makes the sequence longer: the caller's
attention mask, the mean pooling over it and the teacher's per-token targets would no longer line up with the
model's output, and an export would need a tokenizer of its own; the mean of the pieces keeps one row per token,
so it runs in the same forward pre-hook and exports to ONNX as a gather and a mean. (The sum of the rows measured
the same as the mean, and re-tokenizing inside the forward barely better: BENCHMARKS.md, token coverage.)

cover = "output": nearest, by the model's own output instead of its input table: a dropped token reads the kept row
whose one-token text the original embeds most like its own (cosine of static.distill_table's rows, the original's
sentence embedding of each token alone, computed once per model). The same index as nearest, so it saves, exports
and reloads as nearest does (an eager zip's reload reads its saved index instead of computing it). Refused on the
static table, whose rows are those outputs already (its nearest row is output's).

cover = "sparse": a dropped token reads a weighted sum of ATOMS kept rows, chosen to rebuild its own row (orthogonal
matching pursuit: the kept row most like what is left, ATOMS times, the weights by least squares each time), stored
as (vocab, ATOMS) indices and fp16 weights (MiniLM: 0.49 MB, the price of ~15% of the rows at 2 bits). The entrance
passes inputs_embeds as resplit does; a reload reads the saved indices and weights instead of fitting them.
"""
import functools
import hashlib
import re
from collections import Counter
from types import MappingProxyType

import torch
import torch.nn as nn

from ..models.adapters import set_module, tied_embeddings
from ..serve.cache import LRU, content_key
from .static import distill_table
from ..errors import CompressError

CHUNK = 4096  # dropped tokens compared with the kept rows at a time (bounds the similarity matrix's memory)
CAP = 4  # pieces a re-split token may read (MiniLM at 0.25: 6% of the dropped tokens need more and read their nearest)
ATOMS = 4  # kept rows a sparse cover mixes (MiniLM, 2 bits, 1.14 MB of table: 4 atoms and 22% of the rows kept 0.904
#  / 0.915 unhealed vs nearest's 36% 0.900 / 0.917, retrieval 0.729 vs 0.682; healed, 20x: 0.866 / 0.887 vs 0.859)
COVERS = ("nearest", "resplit", "output", "sparse")
KEEPS = ("text", "english")  # which rows are kept: the healing text's tokens, or those and English's
ENGLISH = 100_000  # wordfreq's most frequent English words that rank the tokens of keep "english"
TEACH = ("Vocabulary pruning: the token table keeps only the rows of the tokens real text uses (those of the healing "
         "text first, most frequent first). MiniLM's healing corpus uses a quarter of its 30,522 tokens, and the table "
         "is half of the model. A dropped token reads the kept row nearest its own (nearest: MiniLM's 'relax' reads "
         "'chill'), or resplit: it is cut into kept word pieces as the tokenizer would cut it without it ('roll' + "
         "'##s', 're' + '##la' + '##x') and reads the mean of their rows (on MiniLM unhealed at 0.25 it kept less "
         "than nearest: fidelity 0.884 vs 0.924; a word's row is far from the mean of its pieces'), or output: "
         "the kept token the original embeds most like it, alone (0.929 vs 0.924: about the same), or sparse: a "
         f"weighted sum of {ATOMS} kept rows that rebuilds its own row (fewer rows kept for the same MB; on MiniLM "
         "the same fidelity as nearest and better search results). Rows kept by english: by their share of the "
         "healing text plus their share of English (wordfreq's word frequencies), so everyday words the healing "
         "text never used keep their rows. Heal afterwards; check the second evaluation set "
         "(text the healing never saw).")


def keep_order(tokenizer, texts: list[str], vocab_size: int, alphabet: bool = False,
               keep: str = "text") -> list[int]:
    """Token ids by priority: special tokens, (alphabet: the single-character pieces of every character of the texts'
    tokens), then the texts' tokens by count (keep "english": by their share of the texts plus their share of
    English, so English's tokens come in too), then the rest in vocabulary order ([unusedN] placeholders last)."""
    counts = Counter()
    for i in range(0, len(texts), 256):
        for ids in tokenizer(texts[i:i + 256], add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    if keep == "english":
        total, eng = sum(counts.values()) or 1, english_shares(tokenizer)
        counts = Counter({t: counts[t] / total + eng.get(t, 0.0) for t in counts.keys() | eng.keys()})
    special = [t for t in tokenizer.all_special_ids if 0 <= t < vocab_size]
    seen = [t for t, _ in counts.most_common() if t < vocab_size]
    if alphabet:
        special += _alphabet(tokenizer, seen)
    unused = re.compile(r"\[unused\d+\]")
    rest = sorted(range(vocab_size), key=lambda t: (bool(unused.fullmatch(tokenizer.convert_ids_to_tokens(t) or "")), t))
    return list(dict.fromkeys(special + seen + rest))


@functools.lru_cache(maxsize=4)
def english_shares(tokenizer) -> MappingProxyType:
    """Each token's share of English: the frequencies of wordfreq's ENGLISH most frequent words, each word (with a
    space before it: the form of a word inside a sentence) tokenized and its frequency added to each of its tokens;
    a token of digits alone its own frequency (wordfreq's list writes every digit 0: '2019' is '0000', which gave
    '000' the share of every number). Once per tokenizer (~2.5 s for MiniLM's): read-only, shared by every order."""
    import wordfreq
    top = sorted(wordfreq.get_frequency_dict("en").items(), key=lambda kv: -kv[1])[:ENGLISH]
    top = [(w, f) for w, f in top if not any(c.isdigit() for c in w)]
    shares = Counter({t: wordfreq.word_frequency(w, "en") for w, t in tokenizer.get_vocab().items() if w.isdigit()})
    for (_, f), ids in zip(top, tokenizer([" " + w for w, _ in top], add_special_tokens=False)["input_ids"]):
        for t in ids:
            shares[t] += f
    total = sum(shares.values()) or 1.0
    return MappingProxyType({t: f / total for t, f in shares.items()})


def _dropped(v: int, kept: torch.Tensor) -> torch.Tensor:  # the ids of a table of v rows not kept, ascending
    return torch.ones(v, dtype=torch.bool).index_fill_(0, kept, False).nonzero().squeeze(1)


@torch.no_grad()
def nearest_map(table: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """(vocab,) index into the kept rows: a kept token its own row, any other the kept row of highest cosine."""
    unit, rows = nn.functional.normalize(table.float(), dim=-1), torch.tensor(keep, dtype=torch.long)
    kept, index, dropped = unit[rows], torch.empty(len(table), dtype=torch.long), _dropped(len(table), rows)
    for s in range(0, len(dropped), CHUNK):  # (only the dropped: a kept row's own cosine is the highest anyway)
        index[dropped[s:s + CHUNK]] = (unit[dropped[s:s + CHUNK]] @ kept.T).argmax(-1)
    index[rows] = torch.arange(len(keep))
    return index.to(near_dtype(len(keep)))


@torch.no_grad()
def pursuit(x: torch.Tensor, atoms: torch.Tensor, k: int = ATOMS) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, k) rows of atoms and (b, k) weights whose weighted sum rebuilds each row of x (b, C): orthogonal matching
    pursuit, the atom of highest |cosine| with what is left, then least squares on all chosen so far."""
    unit, left, chosen = nn.functional.normalize(atoms.float(), dim=-1).T.contiguous(), x.float(), []
    for _ in range(min(k, len(atoms))):
        score = (left @ unit).abs_()  # (in place: a fresh (b, kept) matrix a step took a third longer)
        for c in chosen:
            score.scatter_(1, c[:, None], -1.0)  # never chosen twice
        chosen.append(score.argmax(-1))
        parts = atoms.float()[torch.stack(chosen, 1)]  # (b, j, C)
        w = torch.linalg.lstsq(parts.transpose(1, 2), x.float().unsqueeze(-1)).solution.squeeze(-1)  # (b, j)
        left = x.float() - (w.unsqueeze(-1) * parts).sum(1)
    return torch.stack(chosen, 1), w


def sparse_map(table: torch.Tensor, keep: list[int], replay: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(vocab, ATOMS) kept rows and fp16 weights per token: a kept token its own row (weight 1), a dropped one its
    pursuit over the kept rows. replay: a saved model rebuilt, whose saved ones replace these (nothing fitted). A
    table and rows fitted before are taken from _SPARSE (copies)."""
    if replay:
        k, index = min(ATOMS, len(keep)), placeholder(len(table), len(keep))
        return torch.cat([index[:, None], index.new_zeros(len(table), k - 1)], 1), torch.zeros(len(table), k).half()
    t = table.detach().float().cpu().contiguous()
    key = (*content_key(t), hashlib.sha256(str(keep).encode()).digest())
    index, weight = _SPARSE.get_or_make(key, lambda: _sparse(t, keep))
    return index.clone(), weight.clone()


_SPARSE = LRU("sparse covers", 4, "the sparse cover of the last tables pruned, by (content, rows kept): the fit is "
              "deterministic, and an Apply builds its recipe healed and unhealed")


def _sparse(table: torch.Tensor, keep: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    v, k, kept = len(table), min(ATOMS, len(keep)), torch.tensor(keep)
    index, weight = torch.zeros(v, k, dtype=torch.long), torch.zeros(v, k)
    dropped = _dropped(v, kept)
    for s in range(0, len(dropped), CHUNK):  # the dropped tokens only (a kept token reads itself, set below)
        part = dropped[s:s + CHUNK]
        index[part], weight[part] = pursuit(table[part], table[keep], k)
    index[kept], weight[kept] = 0, 0.0
    index[kept, 0], weight[kept, 0] = torch.arange(len(keep)), 1.0
    return index.to(near_dtype(len(keep))), weight.half()


def placeholder(v: int, n: int) -> torch.Tensor:  # a replay's index, replaced by the saved one: reads rows 0..n-1
    return (torch.arange(v) % n).to(near_dtype(n))


def near_dtype(n: int) -> torch.dtype:
    return torch.int16 if n <= torch.iinfo(torch.int16).max else torch.int32


def _prefix(tokenizer) -> str | None:
    """The continuation prefix of the tokenizer's pieces ("##" for WordPiece, "" for BPE and Unigram), or None
    when its pieces are not substrings of words (no fast tokenizer, or BPE with an end-of-word suffix)."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    kind = type(model).__name__
    if kind == "WordPiece":
        return model.continuing_subword_prefix
    if kind == "Unigram" or kind == "BPE" and not model.end_of_word_suffix and not model.continuing_subword_prefix:
        return ""
    return None


def _alphabet(tokenizer, seen: list[int]) -> list[int]:
    """The single-character pieces (word-initial and continuation) of every character of the seen tokens."""
    pre, vocab = _prefix(tokenizer) or "", tokenizer.get_vocab()
    chars = sorted({c for t in tokenizer.convert_ids_to_tokens(seen) for c in (t.removeprefix(pre) if pre else t)})
    return [vocab[p] for c in chars for p in dict.fromkeys((c, pre + c)) if p in vocab]


def split(token: str, kept: dict[str, int], pre: str) -> list[int] | None:
    """The kept rows of token re-split by greedy longest match (WordPiece's: pieces after the first carry pre), or
    None when some part matches no kept piece."""
    cont = bool(pre) and token.startswith(pre)
    body, rows, i = token[len(pre):] if cont else token, [], 0
    while i < len(body):
        j = next((j for j in range(len(body), i, -1) if (pre if cont or i else "") + body[i:j] in kept), None)
        if j is None:
            return None
        rows.append(kept[(pre if cont or i else "") + body[i:j]])
        i = j
    return rows or None


def resplit_map(tokenizer, table: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """(vocab, CAP) rows of the kept table per token, -1 padded: a kept token its own row, a dropped one its kept
    pieces (split), or its nearest kept row when it has none or more than CAP."""
    near, pre = nearest_map(table, keep).long(), _prefix(tokenizer)
    kept = {tokenizer.convert_ids_to_tokens(t): r for r, t in enumerate(keep)}
    index = torch.full((len(table), CAP), -1, dtype=torch.long)
    index[:, 0] = near
    for t, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(table))))):
        rows = split(token, kept, pre) if token is not None and token not in kept else None
        if rows and len(rows) <= CAP:
            index[t, :len(rows)] = torch.tensor(rows)
    return index.to(near_dtype(len(keep)))


def _cover_ids(path, weighted, model, args, kwargs):  # a forward pre-hook: token ids -> the mean of their pieces'
    ids = args[0] if args else kwargs.pop("input_ids")  # rows (weighted: the weighted sum of their atoms' rows)
    pieces = model.vocab_index[ids].long()  # (B, T, CAP), -1: no piece
    have = (pieces >= 0).unsqueeze(-1)
    rows = model.get_submodule(path)(pieces.clamp(min=0).reshape(-1)).view(*pieces.shape, -1)  # (B, T, CAP, C)
    if weighted:
        kwargs["inputs_embeds"] = (rows * model.vocab_weight.to(rows.dtype)[ids].unsqueeze(-1)).sum(-2)  # cast first:
        #  an fp16 gather in the export is one onnxruntime's int8 pass cannot quantize (an invalid graph)
    else:
        kwargs["inputs_embeds"] = (rows * have).sum(-2) / have.sum(-2).clamp(min=1)
    return (None, *args[1:]) if args else args, kwargs


def _map_ids(model, args, kwargs):  # a forward pre-hook: token ids -> rows of the kept table
    if args:
        return (model.vocab_index[args[0]].long(), *args[1:]), kwargs
    kwargs["input_ids"] = model.vocab_index[kwargs["input_ids"]].long()
    return args, kwargs


def cached_order(bundle, texts: list[str], alphabet: bool = False, keep: str = "text") -> list[int]:
    """keep_order of the bundle's tokenizer over texts, remembered for the last text given (an Apply of another
    fraction does not tokenize the healing corpus again)."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    got = bundle.cache.get(("vocab_order", alphabet, keep))
    if got is None or got[0] != digest:
        got = bundle.cache[("vocab_order", alphabet, keep)] = (
            digest, keep_order(bundle.tokenizer, texts, bundle.vocab_size, alphabet, keep))
    return got[1]


def prune(model: nn.Module, adapter, bundle, texts: list[str], n: int, cover: str = "nearest",
          replay: bool = False, keep_by: str = "text") -> nn.Module:
    """The word table cut to n rows (the bundle's keep order over texts), in place; model.vocab_index maps every
    token to its row (cover "resplit": to the rows of its kept pieces; "output": nearest by the original's output;
    replay: a saved model rebuilt, whose saved index replaces this one, so none is computed; keep_by: KEEPS)."""
    table = model.get_submodule(adapter.word_embeddings)
    v = table.weight.shape[0]
    if bundle.tokenizer is None:
        raise CompressError("vocabulary pruning keeps the tokens of the healing text; this model has no tokenizer")
    if not 1 <= n <= v:
        raise CompressError(f"keep between 1 and the model's {v:,} tokens, got {n:,}")
    keep = cached_order(bundle, texts, alphabet=cover == "resplit", keep=keep_by)[:n]
    if cover == "resplit":
        index = resplit_map(bundle.tokenizer, table.weight, keep)
    elif cover == "sparse":
        index, weight = sparse_map(table.weight, keep, replay)
        model.register_buffer("vocab_weight", weight.to(table.weight.device))
    else:  # a replay's index is replaced by the saved one (loaded strictly, checked against the placeholder's range)
        index = placeholder(v, n) if replay else nearest_map(
            distill_table(bundle) if cover == "output" else table.weight, keep)
    model.register_buffer("vocab_index", index)
    small = nn.Embedding(n, table.weight.shape[1], padding_idx=None).to(table.weight.device, table.weight.dtype)
    small.weight.data.copy_(table.weight.data[keep])
    set_module(model, adapter.word_embeddings, small)
    hook = _map_ids if cover in ("nearest", "output") else functools.partial(_cover_ids, adapter.word_embeddings,
                                                                             cover == "sparse")
    model.register_forward_pre_hook(hook, with_kwargs=True)
    return model


def refuse(b, r) -> str | None:
    """The table's refusal for vocabulary pruning (b None: the recipe alone)."""
    if r.vocab != 1 and r.static and r.vocab_cover == "output":
        return ("the static table's rows are the original's outputs already, so its nearest row is the output cover's: "
                "choose vocab_cover nearest")
    if r.vocab == 1 or b is None:
        return None
    if b.adapter.causal or tied_embeddings(b.model, b.adapter):
        return (f"{b.name} is a decoder: its output layer scores every token of the vocabulary, so pruning rows "
                "would remove words it can write (encoders only)")
    if b.tokenizer is None:
        return f"vocabulary pruning keeps the healing text's tokens; {b.name} has no tokenizer"
    if r.vocab_cover == "resplit" and _prefix(b.tokenizer) is None:
        return (f"{b.name}'s tokenizer has no word pieces to re-split a dropped token into (WordPiece, BPE or Unigram): "
                "choose vocab_cover nearest")
    return None
