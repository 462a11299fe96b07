"""The bundled Llama-architecture decoder (assets/tinyllama): a Hugging Face folder that transformers loads offline,
whose card tells the truth about its weights, tokenizer and held-out score, and which learned something."""

import hashlib
import platform

import pytest
import torch

from compress.models import tinyllama as tl
from compress.models.tinygpt import corpus_sha256, load_corpus, split_corpus


@pytest.fixture(scope="module")
def shipped():
    if not (tl.ASSET_DIR / "model.safetensors").exists():
        pytest.skip(f"no trained weights at {tl.ASSET_DIR}")
    return tl.load_tinyllama()


@pytest.fixture(scope="module")
def corpus(shipped):
    text = load_corpus()
    if corpus_sha256(text) != shipped[2]["corpus_sha256"]:
        pytest.skip(f"pydoc_data.topics differs on Python {platform.python_version()} "
                    f"(card: {shipped[2]['python_version']})")
    return split_corpus(text)


def test_folder_is_a_plain_llama_and_the_card_describes_it(shipped):
    model, tok, card = shipped
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.model_type == "llama"
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention, so GQA paths are exercised
    assert cfg.num_attention_heads % cfg.num_key_value_heads == 0
    for k, v in card["config"].items():
        assert getattr(cfg, k) == v, k
    assert sum(p.numel() for p in model.parameters()) == card["params"]
    assert len(tok) == cfg.vocab_size == card["config"]["vocab_size"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (cfg.bos_token_id, cfg.eos_token_id,
                                                                      cfg.pad_token_id)
    assert hashlib.sha256((tl.ASSET_DIR / "tokenizer.json").read_bytes()).hexdigest() == card["tokenizer_sha256"]
    assert (tl.ASSET_DIR / "model.safetensors").stat().st_size < 15 * 2**20
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in tl.ASSET_DIR.iterdir())  # safetensors only


def test_corpus_hash_matches_card(shipped):
    card = shipped[2]
    if platform.python_version() != card["python_version"]:
        pytest.skip(f"Python {platform.python_version()} != card's {card['python_version']}")
    text = load_corpus()
    assert corpus_sha256(text) == card["corpus_sha256"] and len(text) == card["corpus_chars"]


def test_tokenizer_is_rebuilt_identically_from_the_train_split(shipped, corpus):
    from tokenizers import Tokenizer
    rebuilt = tl.build_tokenizer(corpus[0], shipped[2]["config"]["vocab_size"])
    assert rebuilt.backend_tokenizer.to_str() == Tokenizer.from_file(str(tl.ASSET_DIR / "tokenizer.json")).to_str()
    # no unknown token: any text, accents and symbols included, round-trips through the byte-level BPE
    s = "def f(x):\n    return x → 'héllo' ✓"
    assert shipped[1].decode(shipped[1](s)["input_ids"], skip_special_tokens=True) == s


def test_held_out_bits_per_byte_reproduce_the_card_and_beat_the_baselines(shipped, corpus):
    """The bundle's quality column (its adapter's bits_per_byte over the whole held-out split, through the app's
    forward) is the card's number, and it moves when the model is cut; the baselines are beaten."""
    import compress as C
    from compress.measure import metrics
    model, tok, card = shipped
    train, val = corpus
    b = C.load_model("tinyllama")
    assert "bits_per_byte" in metrics.names_for(b) and "bits_per_token" not in metrics.names_for(b)
    bpb = b.adapter.extra_quality(b)["bits_per_byte"]
    assert bpb == pytest.approx(card["val_bits_per_byte"], abs=2e-3)
    c = C.compress(b, C.Recipe(layers=1))
    assert c.adapter.extra_quality(c)["bits_per_byte"] > bpb + 0.1
    # the baselines, recomputed here: uniform bytes (8), uniform tokens, train's token frequencies without context
    val_bytes = len(val.encode("utf-8"))
    val_ids = tl.text_ids(tok, val)
    uniform = torch.log2(torch.tensor(float(len(tok)))).item() * val_ids.numel() / val_bytes
    unigram = tl.unigram_bits_per_byte(tl.text_ids(tok, train), val_ids, len(tok), val_bytes)
    assert unigram == pytest.approx(card["val_bits_per_byte_unigram"], rel=1e-6)
    assert unigram < uniform < 8
    assert card["val_bits_per_byte"] < unigram - 0.5  # it learned context, not only token frequencies
    assert bpb < unigram - 0.5


def test_bits_per_byte_windows_score_every_token_once():
    # a tiny random Llama: batching and the ragged last window do not change the number, and a text of one
    # token is scored as -log2 p(token | <s>) over its bytes
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    tok = tl.build_tokenizer("the cat sat on the mat. " * 40, vocab_size=300)
    text = "the mat sat on the cat, " * 7
    assert tl.bits_per_byte(model, tok, text, 16, batch_size=1) == pytest.approx(
        tl.bits_per_byte(model, tok, text, 16, batch_size=4), rel=1e-5)
    ids = tl.text_ids(tok, "the")
    assert ids.numel() == 1
    logp = torch.log_softmax(model(torch.tensor([[tok.bos_token_id]])).logits[0, -1], -1)[ids[0]]
    assert tl.bits_per_byte(model, tok, "the", 16) == pytest.approx(-logp.item() / torch.log(torch.tensor(2.)).item() / 3,
                                                                 rel=1e-5)


def test_greedy_continuation_is_real_text(shipped):
    model, tok, _ = shipped
    prompt = tok("The for statement", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
        again = model.generate(**prompt, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, prompt["input_ids"].shape[1]:]
    assert torch.equal(out, again)
    assert len(set(new.tolist())) >= 8  # not one token (or a short cycle) repeated
    text = tok.decode(new, skip_special_tokens=True)
    assert len(text) > 40 and all(c.isprintable() or c in "\n\t" for c in text), text
    assert sum(c.isalpha() for c in text) > len(text) / 2, text  # words, not punctuation or byte soup


def test_bundle_is_listed_exactly_when_uploads_take_llama_folders():
    import compress as C
    from compress.models import uploads
    assert ("tinyllama" in C.BUNDLED) == ("llama" in uploads.FAMILIES)
    if "tinyllama" not in C.BUNDLED:
        pytest.skip("no Llama-family adapter yet: the bundled tinyllama is off")
    b = C.load_model("tinyllama")
    assert b.name == "tinyllama" and b.task == "generation" and b.info["model_type"] == "llama"
    card = tl.load_tinyllama()[2]
    assert ("note" in b.info) == (corpus_sha256(load_corpus()) != card["corpus_sha256"])  # a note only if it differs
    assert b.tokenizer is not None and len(C.complete(b, "The for statement", 30)) > 0

