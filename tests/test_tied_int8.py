"""int8 on a model whose LM head is its word table (GPT-2, SmolLM, TinyLlama): the table is stored once, in the int8
head, and the embedding reads that head's rows; the measured and the saved size are about one int8 table smaller
than the same model untied, the freeze runtime traces it, and the download loads back to the same outputs."""
import pytest
import torch

import compress as C
from compress.measure.core import size_bytes
from compress.models.adapters import ADAPTERS, forward
from compress.models.bundle import ModelBundle, hf_info
from compress.outputs.export import WEIGHTS, files
from compress.techniques.quantize import TiedInt8Embedding
from builders import perturb

pytestmark = pytest.mark.usefixtures("one_thread")
V, W = 1000, 64  # the table: 64 KB in int8, the blocks (2 of width 64) about as much


def _bundle(fam: str, tied: bool) -> ModelBundle:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    if fam == "gpt2":
        m = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=W, n_layer=2, n_head=4, n_positions=32,
                                       tie_word_embeddings=tied))
    else:
        m = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=W, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=32,
                                         tie_word_embeddings=tied))
    m = ADAPTERS[fam].prepare(perturb(m, 0.05).eval())
    return ModelBundle(m, f"tiny-{fam}-{tied}", ADAPTERS[fam], None, f"{fam}-{tied}", hf_info(m.config, "test"))


@pytest.mark.parametrize("fam", ["gpt2", "llama"])
def test_int8_stores_a_tied_table_once(fam, tmp_path):
    b = _bundle(fam, True)
    tied, untied = C.compress(b, C.Recipe(quant="int8")), C.compress(_bundle(fam, False), C.Recipe(quant="int8"))
    table = tied.model.get_submodule(tied.adapter.word_embeddings)
    head = tied.model.lm_head
    assert isinstance(table, TiedInt8Embedding) and table.head is head
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the embedding is the head's int8 rows, dequantized
        torch.testing.assert_close(table(ids), head.weight().dequantize()[ids], rtol=1e-6, atol=1e-7)
    measured = size_bytes(untied.model) - size_bytes(tied.model)
    saved = len(files(untied)[WEIGHTS]) - len(files(tied)[WEIGHTS])
    for d in (measured, saved):  # one int8 table (V x W bytes) and its per-row scales
        assert V * W < d < 1.5 * V * W, (measured, saved)
    assert C.count_params(untied.model) - C.count_params(tied.model) == V * W
    frozen = C.compress(b, C.Recipe(quant="int8", runtime="freeze"))  # the rows are the trace's constants
    assert frozen.applied["runtime_applied"] == "freeze", frozen.applied.get("runtime_reason")
    back = C.load_compressed(C.save_compressed(tied, tmp_path / "c.zip"), originals=[b])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = forward(tied.model, b.adapter, ids, mask)
        for m in (back.model, frozen.model):
            torch.testing.assert_close(forward(m, b.adapter, ids, mask), want, rtol=1e-5, atol=1e-5)
