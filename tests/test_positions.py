"""Fewer positions (compress/techniques/positions.py): the same outputs for texts that fit, the rows' bytes saved, a
longer text cut to the kept positions instead of failing, a zip (eager and ONNX Runtime) that reloads with its
tokenizer cutting there too, and one-line refusals where there is no table to cut."""
import json
import zipfile

import pytest
import torch

import compress as C
from compress.measure import evaluate
from compress.models.adapters import forward


def _out(b, adapter, ids):
    with torch.no_grad():
        return forward(b.model, adapter, ids["input_ids"], ids["attention_mask"])


def test_minilm_cut_to_128_positions_reads_short_texts_the_same_and_saves_the_other_rows(minilm, tmp_path):
    fp32 = C.compress(minilm, C.Recipe(positions=128)).model
    table = fp32.get_submodule(minilm.adapter.position_embeddings)
    assert table.num_embeddings == 128 and fp32.config.max_position_embeddings == 128
    assert torch.equal(table.weight, minilm.model.embeddings.position_embeddings.weight[:128])
    assert fp32.embeddings.position_ids.shape == fp32.embeddings.token_type_ids.shape == (1, 128)
    cut, plain = (C.compress(minilm, C.Recipe(quant="int8", positions=n)) for n in (128, 0))
    assert cut.info["max_positions"] == 128 and minilm.info["max_positions"] == 512  # the original untouched
    ids = minilm.tokenizer(["a short text", "positions past the text are never read " * 8], return_tensors="pt",
                           padding=True)
    got = _out(cut, minilm.adapter, ids)
    assert torch.equal(got, _out(plain, minilm.adapter, ids))
    saved = C.numbers(plain)["size_bytes"] - C.numbers(cut)["size_bytes"]
    assert saved == (512 - 128) * (384 + 8)  # 8-bit rows: a byte a weight, and a row's scale and zero point
    long = ["a text far longer than the positions kept " * 40]  # ~360 tokens: cut at 128, as the original's 128
    assert torch.allclose(evaluate.embed(cut, long), evaluate.embed(plain, long), atol=1e-6)
    with pytest.raises(C.CompressError, match="the model's 128 positions"):
        evaluate.check_shape(cut, 1, 200)
    back = C.load_compressed(C.save_compressed(cut, tmp_path / "m.zip"))
    assert back.info["max_positions"] == 128 and torch.equal(_out(back, minilm.adapter, ids), got)
    with zipfile.ZipFile(tmp_path / "m.zip") as z:
        assert json.loads(z.read("tokenizer/tokenizer_config.json"))["model_max_length"] == 128


def test_onnx_runtime_zip_of_a_cut_table_reloads_and_says_where_it_cuts(tiny_bert, tmp_path):
    r = dict(runtime="onnxruntime")  # (fp32: ONNX Runtime's int8 pass scales a whole table by its largest value)
    cut, plain = C.compress(tiny_bert, C.Recipe(positions=64, **r)), C.compress(tiny_bert, C.Recipe(**r))
    assert cut.applied["runtime_applied"] == "onnxruntime" and cut.info["max_positions"] == 64
    ids = tiny_bert.tokenizer(["one", "and a text of some more tokens"], return_tensors="pt", padding=True)
    assert torch.allclose(_out(cut, tiny_bert.adapter, ids), _out(plain, tiny_bert.adapter, ids), atol=1e-5)
    path = C.save_compressed(cut, tmp_path / "o.zip")
    with zipfile.ZipFile(path) as z:
        assert "enable_truncation(64)" in z.read("README.md").decode()
    back = C.load_compressed(path, originals=[tiny_bert])
    assert back.info["max_positions"] == 64
    assert torch.allclose(_out(back, tiny_bert.adapter, ids), _out(cut, tiny_bert.adapter, ids), atol=1e-6)


def test_mpnet_keeps_the_rows_after_its_padding_id(tiny_mpnet):
    cut = C.compress(tiny_mpnet, C.Recipe(positions=64))
    offset = tiny_mpnet.adapter.position_offset(tiny_mpnet.model.config)
    assert offset == 2 and cut.model.get_submodule("embeddings.position_embeddings").num_embeddings == 64 + offset
    ids = tiny_mpnet.tokenizer(["mpnet reads positions after its padding id"], return_tensors="pt")
    assert torch.allclose(_out(cut, tiny_mpnet.adapter, ids), _out(tiny_mpnet, tiny_mpnet.adapter, ids), atol=1e-6)


def test_no_table_to_cut_or_nothing_to_cut_is_refused_in_one_line(tiny_bert, tiny_gpt, tiny_modernbert):
    assert C.refusal(tiny_bert, C.Recipe(positions=128)) == \
        "tiny-bert reads at most 128 tokens already: 128 positions cut nothing"
    assert "no learned position table" in C.refusal(tiny_modernbert, C.Recipe(positions=64))  # rotary
    assert "no learned position table" in C.refusal(tiny_gpt, C.Recipe(positions=64))  # not a transformers config
    with pytest.raises(C.CompressError, match="no positions"):
        C.Recipe(static=True, positions=128)
    with pytest.raises(C.CompressError, match="128 positions cut nothing"):
        C.compress(tiny_bert, C.Recipe(positions=128))


def test_neither_the_pooler_nor_the_positions_past_the_texts_change_a_healed_model(minilm):
    """Healing never reads them (its texts stop at 128 tokens; sentence embeddings never read the pooler): the same
    recipe healed with both dropped is the same model, bit for bit, in fewer bytes (the 10x preset's sizes rest on
    this)."""
    r = dict(layers=1, quant="int8", heal_lr=1e-3, heal_steps=3, heal_text="styles")
    full, cut = C.compress(minilm, C.Recipe(**r)), C.compress(minilm, C.Recipe(**r, drop_pooler=True, positions=256))
    assert full.applied["heal"]["dev_after"] == cut.applied["heal"]["dev_after"]
    ids = minilm.tokenizer(["healing never reads them", "so the healed blocks are the same"], return_tensors="pt",
                           padding=True)
    assert torch.equal(_out(full, minilm.adapter, ids), _out(cut, minilm.adapter, ids))
    saved, weights = C.numbers(full)["size_bytes"] - C.numbers(cut)["size_bytes"], 256 * 384 + 384 * 384
    assert weights < saved < 1.1 * weights  # the rows' and the pooler's int8 weights, with their scales and bias
