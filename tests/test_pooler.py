"""Dropping the unused pooler (compress/techniques/pooler.py): the same sentence embeddings, the pooler's bytes saved,
a zip that reloads without it, and a clean refusal where there is no pooler."""
import pytest
import torch

import compress as C
from compress.models.adapters import forward


def test_minilm_without_its_pooler_embeds_the_same_and_is_its_pooler_smaller(minilm, tmp_path):
    pooler = minilm.adapter.pooler_module(minilm.model)
    assert isinstance(pooler.dense, torch.nn.Linear) and C.count_params(pooler) == 384 * 384 + 384
    comp, plain = (C.compress(minilm, C.Recipe(quant="int8", drop_pooler=d)) for d in (True, False))
    assert minilm.adapter.pooler_module(comp.model) is None and minilm.adapter.pooler_module(minilm.model) is pooler
    ids = minilm.tokenizer(["the pooler is never read", "mean pooling reads the last states"], return_tensors="pt",
                           padding=True)
    with torch.no_grad():
        got = forward(comp.model, minilm.adapter, ids["input_ids"], ids["attention_mask"])
        assert torch.equal(got, forward(plain.model, minilm.adapter, ids["input_ids"], ids["attention_mask"]))
    saved = C.numbers(plain)["size_bytes"] - C.numbers(comp)["size_bytes"]
    assert 384 * 384 < saved < 1.1 * 384 * 384  # its int8 weight, and its bias and per-channel scales
    back = C.load_compressed(C.save_compressed(comp, tmp_path / "m.zip"))
    assert back.adapter.pooler_module(back.model) is None
    with torch.no_grad():
        assert torch.equal(forward(back.model, minilm.adapter, ids["input_ids"], ids["attention_mask"]), got)


def test_no_pooler_and_the_static_table_are_refused_in_one_line(tiny_bert, tiny_gpt):
    assert C.refusal(tiny_bert, C.Recipe(drop_pooler=True)) == "tiny-bert has no pooler to drop"  # built without
    assert C.refusal(tiny_gpt, C.Recipe(drop_pooler=True)) == "tiny-gpt has no pooler to drop"
    with pytest.raises(C.CompressError, match="no pooler to drop"):
        C.compress(tiny_bert, C.Recipe(drop_pooler=True))
    with pytest.raises(C.CompressError, match="static table is the whole model: it has no pooler"):
        C.Recipe(static=True, drop_pooler=True)
