"""Tokenization at the speed of a dict lookup, with the same ids: a sentence's words (split on spaces) each
tokenized once by the model's own Rust tokenizer and remembered. Exact for BERT's WordPiece pipeline (BertNormalizer:
per character; BertPreTokenizer: splits at spaces and punctuation, so a word's pieces never depend on its
neighbours); any sentence with a character outside printable ASCII goes to the Rust tokenizer itself, and the
cache is checked against it on every evaluation sentence before it is used (never_differs). At the static end,
where a sentence costs a lookup and an average, tokenization is most of the time: this is what lifts it.
"""
import copy

import numpy as np
import torch

MAX_WORDS = 200_000  # cache entries before it starts over (bounded memory for a server with many users)


def _plain(s: str) -> bool:
    return s.isascii() and s.isprintable()


class WordCache:
    def __init__(self, backend, max_len: int, pad_id: int):
        self.max_len, self.pad_id, self.words = max_len, pad_id, {}
        self.one = copy.deepcopy(backend)  # one text, unpadded, cut at max_len: for sentences the cache does not take
        self.one.no_padding()
        self.one.enable_truncation(max_len)
        self.raw = copy.deepcopy(self.one)  # one word, no specials, never cut
        self.raw.no_truncation()
        self.cls, self.sep = self.one.encode("").ids[:1], self.one.encode("").ids[1:]

    def _ids(self, s: str) -> list[int]:
        if not _plain(s):
            return self.one.encode(s).ids
        words, out = self.words, []
        for w in s.split(" "):
            ids = words.get(w)
            if ids is None:
                if len(words) >= MAX_WORDS:
                    words.clear()
                ids = words[w] = self.raw.encode(w, add_special_tokens=False).ids
            out += ids
        return self.cls + out[:self.max_len - 2] + self.sep

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) (B, T) padded to the longest, as the Rust tokenizer gives them."""
        rows = [self._ids(s) for s in texts]
        ids = np.full((len(rows), max(map(len, rows))), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)


def over(backend, max_len: int, pad_id: int, checks: list[list[str]]):
    """A WordCache over backend (a padded, truncating Rust tokenizer) if its pipeline is BERT's and the cache gives
    its ids on every batch of checks; else backend itself."""
    if type(backend.pre_tokenizer).__name__ != "BertPreTokenizer" or \
            type(backend.normalizer).__name__ not in ("BertNormalizer", "NoneType"):
        return backend
    wc = WordCache(backend, max_len, pad_id)
    for texts in checks:
        want = [torch.tensor([getattr(e, k) for e in backend.encode_batch(texts)]) for k in ("ids", "attention_mask")]
        if not all(map(torch.equal, want, wc(texts))):
            return backend
    return wc
