"""The families (ADAPTERS: model_type -> Adapter): BERT, RoBERTa, DistilBERT, GPT-2, the project's TinyGPT, the Llama
family, and MPNet and ModernBERT (encoders.py); the Adapter type is adapter.py's. forward() is the one call shape of
every family.
"""
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..serve.cancel import checkpoint
from .adapter import ATTENTION, Adapter, conv1d_to_linear, set_module  # noqa: F401 (the library imports them here)
from .encoders import ENCODERS, RobertaAdapter


@dataclass(frozen=True)
class DecoderAdapter(Adapter):
    """A Hugging Face decoder (GPT-2, the Llama family): its own held-out bits per token as well (measure/evaluate.py
    computes it with the next-token numbers; per token of its own tokenizer, so compare within one model)."""
    extra_metrics = ("bits_per_token",)


@dataclass(frozen=True)
class TinyGPTAdapter(Adapter):
    """The project's own byte-level decoder (compress/models/tinygpt.py): forward(ids) -> logits, no mask (causal and
    right-padded: real positions never see the padding); a frozen dataclass config; trained on its own corpus."""
    WINDOW = 128  # healing text: the training split cut into windows of this many characters
    extra_metrics = ("bits_per_char",)
    attn_runtimes = ("sdpa",)  # it calls SDPA itself

    def set_attn_runtime(self, model, impl):
        pass

    def call(self, model, ids, mask):
        return model(ids)

    def heal_texts(self):
        from . import tinygpt as tg
        train = tg.split_corpus(tg.load_corpus())[0]  # never its held-out tail
        return [train[i:i + self.WINDOW] for i in range(0, len(train) - self.WINDOW + 1, self.WINDOW)]

    def extra_quality(self, bundle):
        from . import tinygpt as tg
        text = tg.split_corpus(tg.load_corpus())[1]
        return _held_out("bits_per_char", tg.bits_per_char(lambda x: forward(bundle.model, self, x), text,
                                                             bundle.info["max_positions"]))

    def set_depth(self, model, kept):
        model.config = dataclasses.replace(model.config, n_layer=len(kept))

    def use_attention(self, model, attend):
        for block in self.block_list(model):  # TinyGPT calls SDPA itself; its attention's hook calls attend instead
            block.get_submodule(self.q.rpartition(".")[0]).attend = attend


@dataclass(frozen=True)
class TinyLlamaAdapter(DecoderAdapter):
    """The bundled TinyLlama (a Llama folder, compress/models/tinyllama.py): as its card, held-out bits per UTF-8
    byte of the last 10% of its own training text (pydoc_data.topics), not bits per token of the evaluation
    sentences (text unlike anything it read: 8.4 bits per token for the original)."""
    extra_metrics = ("bits_per_byte",)
    BLOCK = 128  # the card's block_size: windows of 128 tokens, each after a <s>

    def extra_quality(self, bundle):
        from . import tinygpt as tg
        from .tinyllama import bits_per_byte
        text = tg.split_corpus(tg.load_corpus())[1]
        return _held_out("bits_per_byte", bits_per_byte(lambda x: forward(bundle.model, self, x), bundle.tokenizer,
                                                        text, self.BLOCK))


def _held_out(name: str, value: float) -> dict:
    from ..errors import CompressError
    if value != value or value == float("inf"):
        raise CompressError("the compressed model outputs NaN or infinite values; its quality cannot be measured")
    return {name: round(value, 4)}


_BERT = dict(blocks="encoder.layer", q="attention.self.query", k="attention.self.key", v="attention.self.value",
             o="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense",
             word_embeddings="embeddings.word_embeddings", causal=False, heads_attr="num_attention_heads",
             position_embeddings="embeddings.position_embeddings",
             head_attrs=(("num_attention_heads", "count"), ("all_head_size", "width")), pooler="pooler")

# Llama, Qwen2 and Mistral (SmolLM and TinyLlama are Llama): RMSNorm without bias, rotary positions from one shared
# model.rotary_emb, grouped-query attention, a SwiGLU FFN, tied or untied LM head. Qwen2 adds q/k/v biases, Mistral
# a sliding window: both live inside transformers' attention, which reads only num_key_value_groups and head_dim.
_LLAMA = dict(blocks="model.layers", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
              o="self_attn.o_proj", ffn_in="mlp.up_proj", ffn_out="mlp.down_proj", ffn_gate="mlp.gate_proj",
              word_embeddings="model.embed_tokens", causal=True, heads_attr="num_attention_heads",
              kv_heads_attr="num_key_value_heads", embeddings_prefix=("model.embed_tokens.",),
              head_attrs=(("num_key_value_groups", "groups"),))

ADAPTERS = {
    "bert": Adapter("bert", **_BERT),               # BERT and MiniLM-style models
    "roberta": RobertaAdapter("roberta", **_BERT),  # same module layout as BERT
    "distilbert": Adapter("distilbert", "transformer.layer", "attention.q_lin", "attention.k_lin",
                          "attention.v_lin", "attention.out_lin", "ffn.lin1", "ffn.lin2",
                          "embeddings.word_embeddings", False, "n_heads",
                          position_embeddings="embeddings.position_embeddings", head_attrs=(("n_heads", "count"),),
                          layers_attr="n_layers", ffn_attr="hidden_dim"),
    # GPT2LMHeadModel (with its LM head, so it can generate); layers are nn.Linear after conv1d_to_linear.
    # split_size splits c_attn's output into q, k and v.
    "gpt2": DecoderAdapter("gpt2", "transformer.h", "attn.c_attn", "attn.c_attn", "attn.c_attn", "attn.c_proj",
                           "mlp.c_fc", "mlp.c_proj", "transformer.wte", True, "n_head",
                           embeddings_prefix=("transformer.wte.", "transformer.wpe."), fused_qkv=True,
                           position_embeddings="transformer.wpe",
                           head_attrs=(("num_heads", "count"), ("split_size", "width")),
                           layers_attr="n_layer", ffn_attr="n_inner"),
    "tinygpt": TinyGPTAdapter("tinygpt", "blocks", "attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc", "mlp.proj",
                              "wte", True, "n_head", embeddings_prefix=("wte.", "wpe."), position_embeddings="wpe",
                              uploadable=False, sample_tokens=200, layers_attr="n_layer",  # bytes, not tokens
                              ffn_attr=""),  # (its MLP is ffn_mult x n_embd)
    "llama": DecoderAdapter("llama", **_LLAMA),
    "qwen2": DecoderAdapter("qwen2", **_LLAMA),
    "mistral": DecoderAdapter("mistral", **_LLAMA),
    **ENCODERS,  # MPNet and ModernBERT
}
TINYLLAMA = TinyLlamaAdapter("llama", **_LLAMA)  # the bundled TinyLlama's (bundled.py), not an upload family's


def forward(model: nn.Module, adapter: Adapter, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One call shape for every family: (B, T) ids -> last hidden states (encoders) or logits (decoders). A Cancel's
    checkpoint: every evaluation batch, sampled token, timed run and dev check passes here (not inside a graph
    torch.compile traces: there it would be a guard on the current job, recompiled for every job)."""
    if not torch.compiler.is_compiling():
        checkpoint()
    if getattr(model, "runtime", None) in ("freeze", "compile", "onnxruntime"):  # a traced / compiled / ORT call
        return model(ids, mask)
    return adapter.call(model, ids, mask)


def tied_embeddings(model: nn.Module, adapter: Adapter) -> bool:
    """Does another layer (GPT-2's LM head) share the word-embedding table's weight?"""
    w = model.get_submodule(adapter.word_embeddings).weight
    return any(p is w for n, p in model.named_parameters(remove_duplicate=False)
               if not n.startswith(adapter.word_embeddings + "."))
