"""Tests for the bundled TinyGPT (compress/models/tinygpt.py) and its shipped weights."""

import copy
import json
import platform
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from builders import perturb
from compress.models.tinygpt import (
    GPTConfig,
    TinyGPT,
    bits_per_char,
    corpus_sha256,
    decode,
    encode,
    load_corpus,
    load_tinygpt,
    split_corpus,
)

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "tinygpt"


@pytest.fixture(scope="module")
def shipped():
    if not (ASSET_DIR / "model.safetensors").exists():
        pytest.skip(f"no trained weights at {ASSET_DIR}")
    return load_tinygpt(ASSET_DIR)


def _tiny_random(n_head=4, n_embd=32, n_layer=2, block_size=16, seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=0.0)
    return perturb(TinyGPT(cfg).eval(), 0.1)


def test_encode_decode_roundtrip():
    s = "héllo → wörld"
    assert decode(encode(s)) == s
    assert all(0 <= i < 256 for i in encode(s))
    assert decode([0xE2, 0x86]) == "\ufffd"  # cut-off multi-byte char is replaced, not raised


# (a) the shipped weights are real: they reproduce the held-out score stored in the card
def test_shipped_weights_reproduce_val_bpc(shipped):
    model, card = shipped
    text = load_corpus()
    if corpus_sha256(text) != card["corpus_sha256"]:
        pytest.skip(f"corpus differs on Python {platform.python_version()} (card: {card['python_version']})")
    _, val = split_corpus(text)
    bpc = bits_per_char(model, val, model.config.block_size, max_chars=card["val_slice_chars"])
    assert bpc == pytest.approx(card["val_bpc_slice"], abs=2e-3)
    assert card["val_bpc"] <= 2.0
    assert model.num_params() == card["params"]


# (b) the corpus on this Python is the one the card was trained on
def test_corpus_hash_matches_card(shipped):
    _, card = shipped
    if platform.python_version() != card["python_version"]:
        pytest.skip(f"Python {platform.python_version()} != card's {card['python_version']}: "
                    "pydoc_data.topics differs between Python versions")
    text = load_corpus()
    assert corpus_sha256(text) == card["corpus_sha256"]
    assert len(text) == card["corpus_chars"]


# (c) generation (evaluate.complete, what the app runs) is reproducible, seed-dependent, leaves the global RNG alone
def test_generate_deterministic():
    import compress as C
    b = C.load_model("tinygpt")
    prompt = "The for statement"
    assert C.complete(b, prompt, 60) == C.complete(b, prompt, 60)
    rng_before = torch.get_rng_state()
    a = C.complete(b, prompt, 80, greedy=False, seed=1)
    same = C.complete(b, prompt, 80, greedy=False, seed=1)
    c = C.complete(b, prompt, 80, greedy=False, seed=2)
    assert torch.equal(rng_before, torch.get_rng_state())
    assert a == same
    assert a != c
    assert len(encode(a)) == 80 or "\ufffd" in a  # continuation only, 80 bytes


# (d) forward shape / finiteness, and the model traces
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jit.trace is deprecated in torch 2.13 but still works
def test_forward_and_jit_trace():
    model = _tiny_random()
    idx = torch.randint(0, 256, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, 256)
    assert torch.isfinite(logits).all()
    traced = torch.jit.trace(model, idx)
    torch.testing.assert_close(traced(idx), logits)


def _keep_rows(lin: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    new = nn.Linear(lin.in_features, len(keep))
    new.weight.data = lin.weight.data[keep].clone()
    new.bias.data = lin.bias.data[keep].clone()
    return new


# (e) heads are inferred from shapes: slicing a head out == zeroing its o-columns
def test_head_removal_by_slicing_matches_masking():
    model = _tiny_random(n_head=4, n_embd=32)
    hd = model.blocks[0].attn.head_dim
    idx = torch.randint(0, 256, (2, 16))
    drop = {0: 1, 1: 3}  # block -> head to remove

    masked = copy.deepcopy(model)
    sliced = copy.deepcopy(model)
    for b, h in drop.items():
        cols = slice(h * hd, (h + 1) * hd)
        with torch.no_grad():
            masked.blocks[b].attn.o.weight[:, cols] = 0.0
        attn = sliced.blocks[b].attn
        keep = torch.tensor([i for i in range(attn.q.out_features) if not (h * hd <= i < (h + 1) * hd)])
        attn.q, attn.k, attn.v = (_keep_rows(attn.q, keep), _keep_rows(attn.k, keep), _keep_rows(attn.v, keep))
        o = nn.Linear(len(keep), attn.o.out_features)
        o.weight.data = attn.o.weight.data[:, keep].clone()
        o.bias.data = attn.o.bias.data.clone()
        attn.o = o

    assert sliced.blocks[0].attn.q.out_features == 32 - hd
    out_sliced, out_masked = sliced(idx), masked(idx)
    torch.testing.assert_close(out_sliced, out_masked, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out_masked, model(idx))  # removing a head did change something


def test_bundled_tinygpt_quality_and_samples():
    import compress as C
    b = C.load_model("tinygpt")
    assert b.task == "generation" and "note" not in b.info  # this Python's corpus matches the card
    q = C.quality(b, b)
    card = json.loads((ASSET_DIR / "card.json").read_text())
    assert q["bits_per_char"] == pytest.approx(card["val_bpc"], abs=0.01)
    assert q["next_token_kl"] == 0 and q["top1_agreement"] == 1.0
    comp = C.compress(b, C.Recipe(quant="int8"))
    qc = C.quality(comp, b)
    assert qc["bits_per_char"] > q["bits_per_char"] - 0.01 and 0 < qc["next_token_kl"] < 0.05
    greedy = C.complete(b, "The for statement", 40)
    assert greedy == C.complete(b, "The for statement", 40) and len(greedy) > 20
    assert C.complete(b, "The for statement", 40, greedy=False, seed=1) != greedy


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [dict(heads=2), dict(ffn=0.5), dict(rank_mode="ratio", rank=0.5),
                                    pytest.param(dict(runtime="freeze"), marks=pytest.mark.heavy),  # make test-slow
                                    pytest.param(dict(heads=2, ffn=0.5, rank_mode="ratio", rank=0.5, quant="int8",  # only:
                                                      runtime="freeze"), marks=pytest.mark.heavy)])  # test_table's freeze
def test_every_causal_technique_applies_to_tinygpt(recipe):
    import compress as C
    b = C.load_model("tinygpt")
    comp = C.compress(b, C.Recipe(**recipe))
    q = C.quality(comp, b)
    assert 1.6 < q["bits_per_char"] < 8 and q["next_token_kl"] >= 0 and 0 < q["top1_agreement"] <= 1
    assert comp.applied["runtime_applied"] == comp.recipe.runtime
    assert C.numbers(comp)["params"] <= C.numbers(b)["params"]
    assert len(C.complete(comp, "The for statement", 30, greedy=False)) > 0
