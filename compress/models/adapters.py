"""Per-architecture facts: where the blocks, attention and FFN live, what may be factorized, the task, how the
model is called, its default healing text and extra quality numbers.

One Adapter per family; every technique asks the adapter instead of knowing model classes (no other module
branches on a family or probes a model's attributes).
Paths inside a block are relative to that block. Every technique sees only nn.Linear: GPT-2's
Conv1D layers are swapped for equivalent nn.Linear once, at load (conv1d_to_linear).
"""
import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..serve.cancel import checkpoint


@dataclass(frozen=True)
class Adapter:
    family: str
    blocks: str            # path of the ModuleList of transformer blocks
    q: str
    k: str
    v: str
    o: str
    ffn_in: str
    ffn_out: str
    word_embeddings: str   # path of the token embedding table
    causal: bool
    heads_attr: str        # config attribute holding the head count
    embeddings_prefix: str | tuple = "embeddings."  # state-dict prefix(es) counted as "embeddings" in sizes
    # GPT-2: q, k and v are ONE Linear (c_attn, out = 3C): rows [0, C) are q, [C, 2C) k, [2C, 3C) v, and
    # head h owns rows h*hd:(h+1)*hd of each third. Pruning heads there means slicing those rows in all
    # three thirds, the matching input columns of o, and updating attn.num_heads / attn.split_size.
    fused_qkv: bool = False
    position_embeddings: str = ""  # path of a learned position table (int8 with the word table), "" = none
    # attributes of the attention module that hold its head count ("count") or q/k/v width ("width")
    head_attrs: tuple = ()
    uploadable: bool = True        # a model_type an upload may declare (transformers builds it)
    layers_attr: str = "num_hidden_layers"  # config attribute holding the block count
    ffn_attr: str = "intermediate_size"     # config attribute holding the FFN width
    sample_tokens: int = 30        # tokens a sample continuation runs for
    # SwiGLU (Llama family): down(act(gate(x)) * up(x)); the gate's rows go with ffn_in's rows, "" = no gate
    ffn_gate: str = ""
    # grouped-query attention: the config attribute holding the key/value head count ("" = one per query head).
    # n_heads / n_kv query heads share one k/v head (a group); k and v have n_kv x head_dim rows
    kv_heads_attr: str = ""
    extra_metrics = ()             # the keys extra_quality() returns (a class attribute, not a field)
    attn_runtimes = ("eager", "sdpa")  # the attention implementations set_attn_runtime can choose

    @property
    def task(self) -> str:
        return "generation" if self.causal else "embedding"

    def call(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T) ids -> last hidden states (encoders) or logits (decoders), for a transformers model."""
        if self.causal:  # no KV cache: every call is one full forward
            return model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return model(input_ids=ids, attention_mask=mask).last_hidden_state

    def heal_texts(self) -> list[str] | None:
        """The family's own default healing text, or None for the project's healing sentences."""
        return None

    def export_ready(self, model: nn.Module) -> nn.Module:
        """A copy the ONNX exporter traces right: transformers' sdpa attention traced wrong (MiniLM's hidden states
        off by 1.3); eager attention exports exactly (3e-6)."""
        m = copy.deepcopy(model)
        if hasattr(m, "set_attn_implementation"):
            m.set_attn_implementation("eager")
        return m

    def extra_quality(self, bundle) -> dict:
        """Quality numbers only this family has (TinyGPT: held-out bits per char)."""
        return {}

    def set_attn_runtime(self, model: nn.Module, impl: str) -> None:
        """Attention computed by transformers' eager (matmul, softmax, matmul) or sdpa (PyTorch's fused kernel)."""
        model.set_attn_implementation(impl)

    def use_attention(self, model: nn.Module, attend) -> None:
        """Every block's attention scores computed by attend(module, q, k, v, valid, scale) -> (B, H, T, d), through
        transformers' attention interface (registered once per process under ATTENTION; the mask its sdpa builds,
        from which attend reads the real keys)."""
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
        AttentionInterface.register(ATTENTION, _interface(attend))
        AttentionMaskInterface.register(ATTENTION, sdpa_mask)
        model.set_attn_implementation(ATTENTION)

    def ffn_width(self, config) -> int:
        """The FFN width a transformers config of this family declares (GPT-2's n_inner None: 4 x hidden)."""
        return getattr(config, self.ffn_attr, None) or 4 * config.hidden_size

    def position_offset(self, config) -> int:
        """Positions of the table a sequence cannot use (RoBERTa's start after the padding index)."""
        return 0

    def kv_heads(self, config) -> int:
        """Key/value heads a config declares (GQA); without GQA every query head has its own."""
        return (self.kv_heads_attr and getattr(config, self.kv_heads_attr, None)) or getattr(config, self.heads_attr)

    def block_params(self, config) -> int:
        """Weights of one block from the config alone (biases and norms aside): the upload's estimate before
        anything is built. q and o are hidden x hidden, k and v hidden x (kv heads x head_dim)."""
        h, heads = config.hidden_size, getattr(config, self.heads_attr)
        kv = self.kv_heads(config) * (h // heads)
        return 2 * h * h + 2 * h * kv + (3 if self.ffn_gate else 2) * h * self.ffn_width(config)

    def set_head_count(self, block: nn.Module, count: int, head_dim: int) -> None:
        """The attention module's head attributes after pruning: "count" query heads, "width" count x head_dim,
        "groups" query heads per k/v head (GQA's num_key_value_groups, read off the pruned q and k widths)."""
        attn = block.get_submodule(self.q.rpartition(".")[0])
        kv = count if self.fused_qkv else block.get_submodule(self.k).out_features // head_dim
        values = {"count": count, "width": count * head_dim, "groups": count // kv}
        for name, what in self.head_attrs:
            setattr(attn, name, values[what])

    def set_depth(self, model: nn.Module, kept: list[int]) -> None:
        """After blocks were dropped: the config's layer count, its per-layer attention kinds (Qwen2's layer_types:
        full or sliding window) and each block's cache index (layer_idx) follow. The rotary table is the model's
        own (model.rotary_emb), shared by every block, so it stays as it is."""
        for j, block in enumerate(self.block_list(model)):
            for m in block.modules():
                if getattr(m, "layer_idx", None) is not None:
                    m.layer_idx = j
        types = getattr(model.config, "layer_types", None)
        if types is not None and len(types) > max(kept, default=0):
            model.config.layer_types = [types[i] for i in kept]
        model.config.num_hidden_layers = len(kept)

    def block_list(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks)

    def factorizable(self, model: nn.Module) -> list[str]:
        """Fully-qualified names of the Linear layers inside the blocks (not embeddings, head, pooler)."""
        return [f"{self.blocks}.{name}" for name, m in self.block_list(model).named_modules()
                if isinstance(m, nn.Linear)]

    def qkv(self, block: nn.Module) -> list[tuple[nn.Linear, slice]]:
        """[(layer, output rows)] of q, k and v in one block; for a fused c_attn, thirds of one layer."""
        if not self.fused_qkv:
            return [(block.get_submodule(p), slice(None)) for p in (self.q, self.k, self.v)]
        layer = block.get_submodule(self.q)
        c = layer.out_features // 3
        return [(layer, slice(i * c, (i + 1) * c)) for i in range(3)]


@dataclass(frozen=True)
class RobertaAdapter(Adapter):
    def position_offset(self, config) -> int:
        return (config.pad_token_id or 0) + 1


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
        from ..errors import CompressError
        text = tg.split_corpus(tg.load_corpus())[1]
        bpc = tg.bits_per_char(lambda x: forward(bundle.model, self, x), text, bundle.info["max_positions"])
        if bpc != bpc or bpc == float("inf"):
            raise CompressError("the compressed model outputs NaN or infinite values; its quality cannot be measured")
        return {"bits_per_char": round(bpc, 4)}

    def set_depth(self, model, kept):
        model.config = dataclasses.replace(model.config, n_layer=len(kept))

    def use_attention(self, model, attend):
        for block in self.block_list(model):  # TinyGPT calls SDPA itself; its attention's hook calls attend instead
            block.get_submodule(self.q.rpartition(".")[0]).attend = attend


_BERT = dict(blocks="encoder.layer", q="attention.self.query", k="attention.self.key", v="attention.self.value",
             o="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense",
             word_embeddings="embeddings.word_embeddings", causal=False, heads_attr="num_attention_heads",
             position_embeddings="embeddings.position_embeddings",
             head_attrs=(("num_attention_heads", "count"), ("all_head_size", "width")))

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
}


ATTENTION = "compress"  # the attention implementation name registered with transformers


def _interface(attend):
    """attend in transformers' attention-function convention: (B, H, T, d) in, (B, T, H, d) and no weights out."""
    def fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if key.shape[1] != query.shape[1]:  # grouped-query attention: each kv head serves a group of query heads
            key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
            value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return attend(module, query, key, value, _valid_keys(attention_mask), scale).transpose(1, 2).contiguous(), None
    return fn


def _valid_keys(mask):
    """(B, T) bool of real keys from the mask transformers hands an attention function, or None (no padding). Its
    last query row sees every real key, in a causal mask as in a bidirectional one."""
    if mask is None:
        return None
    if mask.dim() == 2:
        return mask.bool()
    row = mask[:, 0, -1, :]
    return row if row.dtype == torch.bool else row == 0


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Swap every transformers Conv1D (weight stored (in, out)) for the same nn.Linear (weight (out, in)),
    in place, so spectra, factorization and int8 see one layer type with one weight convention."""
    from transformers.pytorch_utils import Conv1D
    for name, m in list(model.named_modules()):
        if isinstance(m, Conv1D):
            lin = nn.Linear(m.nx, m.nf, device=m.weight.device, dtype=m.weight.dtype)
            with torch.no_grad():
                lin.weight.copy_(m.weight.T)  # (in, out) -> (out, in)
                lin.bias.copy_(m.bias)
            set_module(model, name, lin)
    return model


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


def set_module(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent, _, name = fqn.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)
