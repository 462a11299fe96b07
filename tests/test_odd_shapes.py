"""Models of awkward shapes through the technique table: odd hidden sizes and head sizes (65 over 5 heads of 13, 45
over 3 of 15), 3 heads, odd FFN widths (97, 91, 50), an odd vocabulary (1001), grouped-query attention over one
key/value head, a fused q/k/v and a GeGLU FFN. Each step's examples (a count made to fit, healing cut to 2 steps),
and cuts that leave odd widths (FFN, one head, low rank) alone and with int4, int8 and 2/4-bit word tables: compress()
either refuses with a CompressError a person can read, or gives a model that runs (finite outputs of the right shape)
and reloads from save_compressed to the same outputs and size. int4 on an odd FFN (MiniLM at FFN 0.3: 461 wide) once
failed to pack with a torch error ('size of tensor a (231) must match ... (230)')."""
import pytest
import torch

import compress as C
from compress.models.adapters import forward
from conftest import make_tiny_gpt

pytestmark = pytest.mark.usefixtures("one_thread")

# model: (FFN fraction leaving an odd width, low-rank ratio leaving an odd rank of the hidden-wide layers)
ODD = {"bert": (0.3, 0.23),         # FFN 97 -> 29, rank 65 -> 15
       "modernbert": (0.3, 0.25),   # FFN 91 -> 27, rank 60 -> 15
       "qwen2": (0.3, 0.25),        # FFN 50 -> 15, rank 36 -> 9
       "tinygpt": (0.35, 0.2)}      # FFN 180 -> 63, rank 45 -> 9


def _cut(model: str, name: str) -> dict:
    ffn, rank = ODD[model]
    return {"ffn": {"ffn": ffn}, "head": {"heads": 1}, "per_block": {"heads": (2, 1)},
            "rank": {"rank_mode": "ratio", "rank": rank}}[name]


def _fit(ex: dict) -> dict:
    """A step's example on a 2-block model: at most 1 block kept, at most 2 healing steps."""
    return {**ex, **({"layers": 1} if "layers" in ex else {}), **({"heal_steps": 2} if "heal_steps" in ex else {})}


EXAMPLES = [_fit(ex) for s in C.STEPS for ex in s.examples if ex not in s.slow and ex.get("runtime") != "onnxruntime"]
LOW_BITS = [{"quant": "int4"}, {"quant": "int8"}, {"emb_bits": 2}, {"emb_bits": 4, "quant": "int4"}]
ALONE = EXAMPLES + [q for q in LOW_BITS if q not in EXAMPLES]
CUTS = ["ffn", "head", "per_block", "rank"]  # per_block: 2 heads in block 0, 1 in block 1


def _name(d: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in d.items())


CASES = ([pytest.param(m, (), ex, id=f"{m}-{_name(ex)}") for m in ODD for ex in ALONE]
         + [pytest.param(m, (c,), q, id=f"{m}-{c}+{_name(q)}") for m in ODD for c in CUTS for q in LOW_BITS]
         + [pytest.param(m, ("ffn",), {"quant": "int4", "runtime": "onnxruntime"}, id=f"{m}-ffn+int4+onnxruntime")
            for m in ODD])


def _upload(family, d, tokenizers):
    """A random 2-block model of the family at an awkward shape, saved as an upload folder and loaded from it."""
    from transformers import (BertConfig, BertModel, BertTokenizerFast, GPT2TokenizerFast, ModernBertConfig,
                              ModernBertModel, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)
    from builders import perturb
    wp, bpe = tokenizers
    torch.manual_seed(0)
    if family == "bert":
        model = BertModel(BertConfig(vocab_size=1001, hidden_size=65, num_hidden_layers=2, num_attention_heads=5,
                                     intermediate_size=97, max_position_embeddings=64))
        tok = BertTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                sep_token="[SEP]", mask_token="[MASK]")
    elif family == "modernbert":
        model = ModernBertModel(ModernBertConfig(
            vocab_size=1001, hidden_size=60, num_hidden_layers=2, num_attention_heads=3, intermediate_size=91,
            max_position_embeddings=128, bos_token_id=0, pad_token_id=1, eos_token_id=2, cls_token_id=0,
            sep_token_id=2, global_attn_every_n_layers=2, local_attention=4))
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                      unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    else:
        model = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=1001, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
            intermediate_size=50, max_position_embeddings=64, bos_token_id=5, eos_token_id=5,
            tie_word_embeddings=False))
        tok = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                unk_token="<|endoftext|>")
    perturb(model, 0.05).eval().save_pretrained(d)
    (d / "generation_config.json").unlink(missing_ok=True)
    tok.save_pretrained(d)
    return C.load_upload(d)


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory):
    from builders import _tokenizers
    from compress.measure import evaluate
    toks = _tokenizers((evaluate.ASSETS / "heal" / "sentences.txt").read_text().splitlines()[:600])
    made = {f: _upload(f, tmp_path_factory.mktemp(f), toks) for f in ("bert", "modernbert", "qwen2")}
    return {**made, "tinygpt": make_tiny_gpt("odd-tinygpt", heads=3, width=45)}


@pytest.fixture
def bundled_tinygpt(odd_models, monkeypatch):
    """The TinyGPT registered as bundled, so load_compressed finds its original by name (the uploads by content)."""
    monkeypatch.setitem(C.BUNDLED, "odd-tinygpt", lambda: odd_models["tinygpt"])
    C.load_model.cache_clear()
    yield
    C.load_model.cache_clear()


@pytest.mark.parametrize("model, cuts, extra", CASES)
def test_odd_shapes_compress_run_and_reload_or_are_refused(odd_models, bundled_tinygpt, model, cuts, extra, tmp_path):
    b = odd_models[model]
    values = {k: v for c in cuts for k, v in _cut(model, c).items()} | extra
    try:
        comp = C.compress(b, C.Recipe(**values))
    except C.CompressError as e:  # refused before or while building: said in words, not a torch error
        assert str(e).strip(), values
        return
    ids = torch.randint(5, min(1000, b.vocab_size), (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a padded row
    out = forward(comp.model, comp.adapter, ids, mask)
    width = b.vocab_size if b.adapter.causal else b.info["hidden"]
    assert out.shape == (2, 9, width) and torch.isfinite(out.float()).all()
    again = C.load_compressed(C.save_compressed(comp, tmp_path / "m"), originals=[b])
    torch.testing.assert_close(forward(again.model, again.adapter, ids, mask), out, atol=1e-5, rtol=1e-5)
    assert C.numbers(again)["size_bytes"] == C.numbers(comp)["size_bytes"]
