"""The word cache (compress/measure/wordcache.py): the same ids as the model's Rust tokenizer, from a dict of words."""
import random
import string

import torch

from compress.measure import evaluate

from compress.measure import wordcache

ODD = ["Hello,world!!  double  space", "tab\tsep", "naïve café", "x" * 300, "a " * 200, "", " lead", "trail ",
       "中文字", "under_score$%^&*", "don't", "\x1cctl", "no\u00a0break", "[CLS] [SEP] [UNK]"]


def test_minilm_tokenizes_through_the_cache_with_the_same_ids(minilm):
    wc = evaluate._backend(minilm, 128)
    assert isinstance(wc, wordcache.WordCache)  # checked on every evaluation sentence when it was made
    rng = random.Random(0)
    alpha = string.printable[:95] + "  é中\u00a0\u2003\x1c"
    batches = [ODD] + [["".join(rng.choice(alpha) for _ in range(rng.randint(0, 80))) for _ in range(8)]
                       for _ in range(300)]
    for texts in batches:
        want = minilm.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        ids, mask = evaluate.batches(minilm, texts, 64)[0]
        assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"]), texts


def test_the_cache_is_bounded(minilm, monkeypatch):
    wc = wordcache.WordCache(evaluate._backend(minilm, 128).one, 128, 0)
    monkeypatch.setattr(wordcache, "MAX_WORDS", 50)
    wc([" ".join(f"w{i}" for i in range(500))])
    assert 0 < len(wc.words) <= 50


def test_another_pipeline_or_a_disagreement_keeps_the_rust_tokenizer(minilm, monkeypatch):
    from tokenizers import Tokenizer, models, pre_tokenizers
    bpe = Tokenizer(models.WordLevel({"[PAD]": 0, "a": 1, "[UNK]": 2}, unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    assert wordcache.over(bpe, 128, 0, [["a a"]]) is bpe  # not BERT's pipeline: not taken
    bert = evaluate._backend(minilm, 128).one
    assert isinstance(wordcache.over(bert, 128, 0, [["a b"]]), wordcache.WordCache)
    monkeypatch.setattr(wordcache.WordCache, "_ids", lambda self, s: [101, 102])  # a cache that is wrong somewhere
    assert wordcache.over(bert, 128, 0, [["a b"]]) is bert
