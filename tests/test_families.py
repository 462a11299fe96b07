"""Uploads of each family (BERT, DistilBERT, RoBERTa, MPNet, ModernBERT, GPT-2, Llama, Qwen2, Mistral): tiny random models
built from transformers configs, saved as safetensors, zipped, then loaded and put through every technique via the public API."""
import copy
import json
import zipfile
from pathlib import Path

import pytest
import torch

import compress as C
from compress.measure import evaluate
from compress.models.adapters import ADAPTERS, conv1d_to_linear, forward
from builders import LLAMA_FAMILY, _tokenizers, build_family, zip_dir

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = list(C.FAMILIES)  # every family an upload may declare (the adapters'): each needs build_family's model


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """{family: (zip path, in-memory original)}; DistilBERT and RoBERTa zipped inside a sub-folder."""
    tmp = tmp_path_factory.mktemp("families")
    toks = _tokenizers((evaluate.ASSETS / "heal" / "sentences.txt").read_text().splitlines()[:600])
    out = {}
    for fam in FAMILIES:
        model = build_family(fam, tmp / fam, toks)
        out[fam] = (zip_dir(tmp / fam, tmp / f"{fam}.zip", f"my-{fam}/" if fam in ("distilbert", "roberta") else ""),
                    model)
    return out


@pytest.fixture(scope="module")
def bundles(uploads):
    return {fam: C.load_model(str(z)) for fam, (z, _) in uploads.items()}


def _ids(b, n=3, t=11):
    return torch.randint(10, b.vocab_size, (n, t), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fam", FAMILIES)
def test_load_matches_the_saved_model(fam, uploads, bundles):
    b, original = bundles[fam], uploads[fam][1]
    assert b.adapter is ADAPTERS[fam] and b.task == ("generation" if b.adapter.causal else "embedding")
    assert {"architecture", "model_type", "layers", "heads", "hidden", "vocab_size", "max_positions",
            "source"} <= set(b.info) and b.info["tokenizer"] is True and "note" not in b.info
    assert b.info["layers"] == 2 and b.info["heads"] == 4 and b.info["hidden"] == 32 and b.info["vocab_size"] == 1000
    assert len(b.content_hash) == 64 and b.name == str(uploads[fam][0].resolve())
    assert not any(type(m).__name__ == "Conv1D" for m in b.model.modules())  # GPT-2: converted at load
    ids = _ids(b)
    with torch.no_grad():  # same outputs as the model that was saved (the Conv1D -> Linear swap is exact)
        ref = original(input_ids=ids)
        ref = ref.logits if b.adapter.causal else ref.last_hidden_state
        torch.testing.assert_close(forward(b.model, b.adapter, ids), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fam", FAMILIES)
def test_spectra_and_full_rank_factorization_reproduce_outputs(fam, bundles):
    b = bundles[fam]
    spec = C.spectra(b)
    per_block = {"gpt2": 4, "modernbert": 5}.get(fam, 7 if fam in LLAMA_FAMILY else 6)  # fused q, k, v: one; GLU: 3
    assert len(spec) == 2 * per_block and all(name.startswith(b.adapter.blocks + ".") for name in spec)
    for name, s in spec.items():  # (out, in) like nn.Linear; GPT-2's c_attn is (3C, C) after the swap
        w = b.model.get_submodule(name).weight
        assert (s.m, s.n) == tuple(w.shape) and s.s[0] > 0
    if fam == "gpt2":
        assert (spec["transformer.h.0.attn.c_attn"].m, spec["transformer.h.0.attn.c_attn"].n) == (96, 32)
    full = C.apply_factorize(copy.deepcopy(b.model), {k: min(s.m, s.n) for k, s in spec.items()}, spec)
    assert sum(isinstance(m, C.LowRankLinear) for m in full.modules()) == 2 * per_block
    ids = _ids(b)
    with torch.no_grad():
        torch.testing.assert_close(forward(full, b.adapter, ids), forward(b.model, b.adapter, ids),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("fam", FAMILIES)
def test_compress_int8_and_quality_are_finite(fam, bundles):
    b = bundles[fam]
    c = C.compress(b, C.Recipe(rank_mode="ratio", rank=0.25, quant="int8"))
    assert len(c.layers) == len(C.spectra(b))  # one report row per factorizable layer
    assert any("quantized" in type(m).__module__ for m in c.model.modules())
    nums = C.numbers(c)
    assert nums["size_bytes"] < C.numbers(b)["size_bytes"] and nums["params"] > 0
    q_ref, q = C.quality(b, b), C.quality(c, b)
    if b.task == "embedding":
        assert q_ref == {"fidelity": 1.0, "retrieval_overlap": 1.0, "fidelity_docs": 1.0, "retrieval_overlap_docs": 1.0}
        assert 0 < q["fidelity"] <= 1 and 0 <= q["retrieval_overlap"] <= 1 and 0 < q["fidelity_docs"] <= 1
    else:
        assert q_ref == {"next_token_kl": 0.0, "top1_agreement": 1.0, "bits_per_token": q_ref["bits_per_token"]}
        assert 0 < q["next_token_kl"] < 20 and 0 <= q["top1_agreement"] <= 1
        # a random model: about log2(1000) bits a token, each side its own (the compressed one is not the original)
        assert 5 < q_ref["bits_per_token"] < 15 and q["bits_per_token"] != q_ref["bits_per_token"]
    assert all(v == v for v in q.values())  # no NaN


@pytest.mark.parametrize("fam", FAMILIES)
def test_the_adapters_config_names_are_the_models_own(fam, uploads):
    """The family facts uploads asks the adapter for: the config's block count, head count and FFN width."""
    original, a = uploads[fam][1], ADAPTERS[fam]
    blocks = a.block_list(a.prepare(copy.deepcopy(original)))
    assert getattr(original.config, a.layers_attr) == len(blocks) == 2 and getattr(original.config, a.heads_attr) == 4
    assert a.ffn_width(original.config) == blocks[0].get_submodule(a.ffn_in).out_features


def test_gpt2_adapter_splits_the_fused_qkv(bundles):
    b = bundles["gpt2"]
    block = b.adapter.block_list(b.model)[0]
    parts = b.adapter.qkv(block)
    assert [p[0] for p in parts] == [block.attn.c_attn] * 3
    w = block.attn.c_attn.weight
    assert torch.equal(torch.cat([w[s] for _, s in parts]), w) and [w[s].shape[0] for _, s in parts] == [32] * 3
    bert = bundles["bert"]
    q, k, v = (m for m, _ in bert.adapter.qkv(bert.adapter.block_list(bert.model)[0]))
    assert (q, k, v) == tuple(bert.model.get_submodule(f"encoder.layer.0.attention.self.{n}")
                              for n in ("query", "key", "value"))


def test_conv1d_to_linear_is_exact():
    from transformers.pytorch_utils import Conv1D
    torch.manual_seed(0)
    conv = Conv1D(12, 5)
    torch.nn.init.normal_(conv.bias)
    lin = conv1d_to_linear(torch.nn.Sequential(copy.deepcopy(conv)))[0]
    x = torch.randn(2, 3, 5)
    assert isinstance(lin, torch.nn.Linear) and lin.weight.shape == (12, 5)
    torch.testing.assert_close(lin(x), conv(x))


@pytest.mark.parametrize("fam", ["gpt2", *LLAMA_FAMILY])
def test_decoders_generate_and_bf16_quality(fam, bundles):
    b = bundles[fam]
    text = C.complete(b, "The city council", max_new_tokens=5)
    assert isinstance(text, str)
    c = C.compress(b, C.Recipe(quant="bf16"))
    assert C.complete(c, "The city council", max_new_tokens=5) is not None
    q = C.quality(c, b)
    assert 0 <= q["next_token_kl"] < 1 and q["top1_agreement"] > 0.5


def test_upload_without_tokenizer_uses_random_ids(tmp_path):
    for fam in ("bert", "gpt2"):
        build_family(fam, tmp_path / fam)  # no tokenizer files
        b = C.load_model(str(zip_dir(tmp_path / fam, tmp_path / f"{fam}.zip")))
        assert b.tokenizer is None and b.info["tokenizer"] is False and "random token ids" in b.info["note"]
        assert "indicative" in C.quality_words(b)
        q = C.quality(C.compress(b, C.Recipe(quant="int8")), b)
        assert all(0 <= v < 20 for v in q.values())
        with pytest.raises(C.CompressError, match="no tokenizer"):
            (C.complete(b, "hi") if fam == "gpt2" else C.search(b, "hi"))


def test_folder_upload_and_content_cache(tmp_path, uploads, bundles):
    with zipfile.ZipFile(uploads["bert"][0]) as z:
        z.extractall(tmp_path / "folder")
    a = C.load_model(str(uploads["bert"][0]))
    b = C.load_model(str(tmp_path / "folder"))
    assert b.content_hash == a.content_hash and b.model is a.model  # cached by content, not by path
    assert b.name == str((tmp_path / "folder").resolve()) and b.info["source"] == b.name


def test_save_and_reload_an_upload(tmp_path, bundles):
    b = bundles["gpt2"]
    c = C.compress(b, C.Recipe(rank_mode="energy", rank=0.9, quant="int8"))
    C.save_compressed(c, tmp_path / "saved.zip")
    card = json.loads(zipfile.ZipFile(tmp_path / "saved.zip").read("card.json"))
    assert card["original"] == {"name": Path(b.name).name, "content_hash": b.content_hash,  # never a server path
                                "architecture": b.info["architecture"], "source": "an upload",
                                "weights": "float32"}
    with pytest.raises(C.CompressError, match="load that original model first"):
        C.load_compressed(tmp_path / "saved.zip")
    back = C.load_compressed(tmp_path / "saved.zip", originals=[bundles["bert"], b])
    ids = _ids(b)
    with torch.no_grad():
        assert torch.equal(forward(back.model, b.adapter, ids), forward(c.model, b.adapter, ids))


@pytest.mark.slow
def test_cli_apply_with_an_upload(uploads, capsys):
    from compress.__main__ import main
    rc = main(["apply", "--model", str(uploads["gpt2"][0]), "--rank-mode", "ratio", "--rank", "0.25",
               "--quant", "int8", "--batch", "1", "--seq", "16"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    r = json.loads(out.out)
    assert r["compressed"]["quality"]["top1_agreement"] <= 1 and r["original"]["quality"]["next_token_kl"] == 0
    assert main(["apply", "--model", "no/such/model.zip"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_sharded_fp16_checkpoint_loads_as_fp32(tmp_path):
    model = build_family("gpt2", tmp_path / "src")
    model.half().save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    b = C.load_model(str(tmp_path / "sharded"))
    assert all(p.dtype == torch.float32 for p in b.model.parameters())
    ids = _ids(b)
    with torch.no_grad():
        torch.testing.assert_close(forward(b.model, b.adapter, ids), model.float()(input_ids=ids).logits)


@pytest.mark.parametrize("fam", [f for f in FAMILIES if f != "modernbert"])  # (its block 0 alone has no attention
def test_one_of_two_layers_is_the_same_model_built_with_one_layer(fam, uploads, bundles):  # norm: test_encoders)
    import copy
    b, original = bundles[fam], uploads[fam][1]
    small = C.compress(b, C.Recipe(layers=1))
    assert len(b.adapter.block_list(small.model)) == 1 and len(b.adapter.block_list(b.model)) == 2
    cfg = copy.deepcopy(original.config)
    setattr(cfg, b.adapter.layers_attr, 1)
    assert getattr(small.model.config, b.adapter.layers_attr) == 1
    ref = type(original)(cfg).eval()  # built with one block; it gets the kept block's weights
    (kept,) = small.applied["kept_blocks"]
    pre = b.adapter.blocks + "."
    sd = {k.replace(f"{pre}{kept}.", pre + "0."): v for k, v in original.state_dict().items()
          if not k.startswith(f"{pre}{1 - kept}.")}
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.startswith("pooler.") for k in missing)  # (built here with a pooler)
    ids = _ids(b)
    with torch.no_grad():
        torch.testing.assert_close(forward(small.model, b.adapter, ids), forward(ref, b.adapter, ids), rtol=1e-5, atol=1e-5)
    assert all(getattr(m, "layer_idx", 0) in (0, None) for m in small.model.modules())  # cache slots renumbered
