"""Vocabulary pruning: the word table keeps n rows, those of the tokens the healing text is made of (most frequent
first; then the vocabulary's own order, which for WordPiece and BPE is roughly by frequency), and every other token
reads the kept row nearest its own (cosine, in the original table). The table is most of a small encoder: MiniLM's
healing corpus uses 7,486 of its 30,522 tokens. A token's ids are mapped at the model's entrance (a buffer of one
int16 / int32 per token, saved with the weights), so the table's other techniques (bits, rank, int8) apply to the
smaller table as to the full one. Encoders only: a decoder's output layer scores every token of the vocabulary.
"""
import hashlib
import re
from collections import Counter

import torch
import torch.nn as nn

from ..models.adapters import set_module, tied_embeddings
from ..errors import CompressError

CHUNK = 4096  # dropped tokens compared with the kept rows at a time (bounds the similarity matrix's memory)


def keep_order(tokenizer, texts: list[str], vocab_size: int) -> list[int]:
    """Token ids by priority: special tokens, then those of texts by count, then the rest in vocabulary order
    (BERT's [unusedN] placeholders last)."""
    counts = Counter()
    for i in range(0, len(texts), 256):
        for ids in tokenizer(texts[i:i + 256], add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    special = [t for t in tokenizer.all_special_ids if 0 <= t < vocab_size]
    seen = [t for t, _ in counts.most_common() if t < vocab_size]
    unused = re.compile(r"\[unused\d+\]")
    rest = sorted(range(vocab_size), key=lambda t: (bool(unused.fullmatch(tokenizer.convert_ids_to_tokens(t) or "")), t))
    return list(dict.fromkeys(special + seen + rest))


@torch.no_grad()
def nearest_map(table: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """(vocab,) index into the kept rows: a kept token its own row, any other the kept row of highest cosine."""
    unit = nn.functional.normalize(table.float(), dim=-1)
    kept = unit[keep]
    index = torch.empty(len(table), dtype=torch.long)
    for s in range(0, len(table), CHUNK):
        index[s:s + CHUNK] = (unit[s:s + CHUNK] @ kept.T).argmax(-1)
    index[torch.tensor(keep)] = torch.arange(len(keep))
    return index.to(torch.int16 if len(keep) <= torch.iinfo(torch.int16).max else torch.int32)


def _map_ids(model, args, kwargs):  # a forward pre-hook: token ids -> rows of the kept table
    if args:
        return (model.vocab_index[args[0]].long(), *args[1:]), kwargs
    kwargs["input_ids"] = model.vocab_index[kwargs["input_ids"]].long()
    return args, kwargs


def cached_order(bundle, texts: list[str]) -> list[int]:
    """keep_order of the bundle's tokenizer over texts, remembered for the last text given (an Apply of another
    fraction does not tokenize the healing corpus again)."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    got = bundle.cache.get("vocab_order")
    if got is None or got[0] != digest:
        got = bundle.cache["vocab_order"] = (digest, keep_order(bundle.tokenizer, texts, bundle.vocab_size))
    return got[1]


def prune(model: nn.Module, adapter, bundle, texts: list[str], n: int) -> nn.Module:
    """The word table cut to n rows (the bundle's keep order over texts), in place; model.vocab_index maps every
    token to its row."""
    table = model.get_submodule(adapter.word_embeddings)
    v = table.weight.shape[0]
    if bundle.tokenizer is None:
        raise CompressError("vocabulary pruning keeps the tokens of the healing text; this model has no tokenizer")
    if not 1 <= n <= v:
        raise CompressError(f"keep between 1 and the model's {v:,} tokens, got {n:,}")
    keep = cached_order(bundle, texts)[:n]
    model.register_buffer("vocab_index", nearest_map(table.weight, keep))
    small = nn.Embedding(n, table.weight.shape[1], padding_idx=None).to(table.weight.device, table.weight.dtype)
    small.weight.data.copy_(table.weight.data[keep])
    set_module(model, adapter.word_embeddings, small)
    model.register_forward_pre_hook(_map_ids, with_kwargs=True)
    return model


def refuse(b, r) -> str | None:
    """The table's refusal for vocabulary pruning (b None: the recipe alone)."""
    if r.vocab == 1 or b is None:
        return None
    if b.adapter.causal or tied_embeddings(b.model, b.adapter):
        return (f"{b.name} is a decoder: its output layer scores every token of the vocabulary, so pruning rows "
                "would remove words it can write (encoders only)")
    if b.tokenizer is None:
        return f"vocabulary pruning keeps the healing text's tokens; {b.name} has no tokenizer"
    return None
