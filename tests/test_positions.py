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
from compress.models.bundle import common
from compress.table import pipeline


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
    assert "no position table declared by a transformers config" in C.refusal(tiny_modernbert, C.Recipe(positions=64))  # rotary
    assert "no position table declared by a transformers config" in C.refusal(tiny_gpt, C.Recipe(positions=64))  # not a transformers config
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


@pytest.fixture(scope="module")
def byte_gpt2(tmp_path_factory):
    """A GPT-2 of 256 positions over bytes: the evaluation sentences run past 64 tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(["x"], trainers.BpeTrainer(vocab_size=300, show_progress=False, special_tokens=[
        "<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            unk_token="<|endoftext|>")
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("gpt2bytes")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=0,
                               eos_token_id=0)).save_pretrained(d)
    tok.save_pretrained(d)
    (d / "generation_config.json").unlink(missing_ok=True)
    return C.load_upload(d)


def test_what_measures_a_cut_model_gives_both_models_inputs_the_cut_one_reads(minilm, byte_gpt2, tiny_bert):
    """Timing, decoder quality and sensitivity-ranked ranks feed the compressed model what the original read: cut
    at its positions (bundle.common), or refused in one line where the shape asked for is longer."""
    cut = C.compress(byte_gpt2, C.Recipe(positions=64))
    assert max(len(byte_gpt2.tokenizer(t)["input_ids"]) for t in evaluate.eval_set()[0]) > 64
    q = C.quality(cut, byte_gpt2)
    assert q["top1_agreement"] == 1.0 and q["next_token_kl"] == 0  # both read windows of 64: the same model there
    assert common(byte_gpt2, cut).info["max_positions"] == 64 and common(byte_gpt2, byte_gpt2) \
        is byte_gpt2
    timed = pipeline.report(byte_gpt2, cut, batch=2, seq=64, runs=7, workload="passages")
    assert timed["compressed"]["latency_ms"]["p50"] > 0 and timed["original"]["latency_ms"]["p50"] > 0
    with pytest.raises(C.CompressError, match="seq <= the model's 64 positions"):
        pipeline.report(byte_gpt2, cut, batch=2, seq=128, runs=7)
    ranks = C.Recipe(positions=64, heads=2, rank_mode="budget", rank=0.5, allocate="sensitivity")
    assert C.compress(tiny_bert, ranks).info["max_positions"] == 64  # its calibration texts cut at 64 too
    linformer = C.compress(tiny_bert, C.Recipe(positions=64, attention="lowrank", attn_rank=16))
    assert {p.shape for n, p in linformer.model.named_parameters() if n.endswith(("attn_E", "attn_F"))} == \
        {(16, 64)}  # Linformer's projections over the 64 positions kept, not the original's 128
