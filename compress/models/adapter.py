"""The Adapter type: per-architecture facts (where the blocks, attention and FFN live, what may be factorized, the task,
how the model is called, its default healing text and extra quality numbers) and the mechanisms every family shares.
The families themselves are registered in adapters.py (ADAPTERS); MPNet and ModernBERT live in encoders.py.

Every technique asks the adapter instead of knowing model classes (no other module branches on a family or probes a
model's attributes). Paths inside a block are relative to that block. Every technique sees only nn.Linear: GPT-2's
Conv1D layers are swapped for equivalent nn.Linear once, at load (Adapter.prepare).
"""
import copy
from dataclasses import dataclass

import torch
import torch.nn as nn


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
    # GPT-2, ModernBERT: q, k and v are ONE Linear (out = 3C): rows [0, C) are q, [C, 2C) k, [2C, 3C) v, and head h
    # owns rows h*hd:(h+1)*hd of each third; pruning slices those rows in all three thirds and o's input columns.
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
    pooler: str = ""         # path of a pooler no output here reads (BERT's: the mean of the last states is pooled)
    kv_heads_attr: str = ""  # GQA: config attribute of the k/v head count ("" = one per query head; a group shares one)
    extra_metrics = ()             # the keys extra_quality() returns (class attributes from here on, not fields)
    attn_runtimes = ("eager", "sdpa")  # the attention implementations set_attn_runtime can choose
    extra_counts = ()  # (config attribute, most): an upload's config is refused above it (MPNet's position buckets)
    refusals = ()      # (step name, why): what the family's architecture cannot do, refused by the table in one line

    @property
    def task(self) -> str:
        return "generation" if self.causal else "embedding"

    def call(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T) ids -> last hidden states (encoders) or logits (decoders), for a transformers model."""
        if self.causal:  # no KV cache: every call is one full forward
            return model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return model(input_ids=ids, attention_mask=mask).last_hidden_state

    def pooler_module(self, model: nn.Module) -> nn.Module | None:  # the pooler, if this model has one
        return dict(model.named_children()).get(self.pooler) if self.pooler else None

    def heal_texts(self) -> list[str] | None:  # the family's own default healing text, or None (the project's)
        return None

    def export_ready(self, model: nn.Module) -> nn.Module:
        """A copy the ONNX exporter traces right: transformers' sdpa attention traced wrong (MiniLM's hidden states
        off by 1.3); eager attention exports exactly (3e-6)."""
        from transformers import PreTrainedModel
        m = copy.deepcopy(model)
        if isinstance(m, PreTrainedModel):  # (the static end's table is not one: it has no attention to switch)
            m.set_attn_implementation("eager")
        return m

    def extra_quality(self, bundle) -> dict:  # quality numbers only this family has (TinyGPT: held-out bits per char)
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

    def position_offset(self, config) -> int:  # positions a sequence cannot use (RoBERTa's start after the padding)
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

    def set_head_count(self, block: nn.Module, count: int, head_dim: int, kept=None) -> None:
        """The attention module's head attributes after pruning: "count" query heads, "width" count x head_dim,
        "groups" query heads per k/v head (GQA's num_key_value_groups, read off the pruned q and k widths); kept: the
        (count,) indices of the heads kept (MPNet's shared position bias reads them)."""
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

    def prepare(self, model: nn.Module) -> nn.Module:  # at load, in place: GPT-2's Conv1D become nn.Linear
        return conv1d_to_linear(model)

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



ATTENTION = "compress"  # the attention implementation name registered with transformers


def _interface(attend):
    """attend in transformers' attention-function convention: (B, H, T, d) in, (B, T, H, d) and no weights out."""
    def fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if key.shape[1] != query.shape[1]:  # grouped-query attention: each kv head serves a group of query heads
            key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
            value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        valid = _valid_keys(attention_mask, module.attn_args["causal"])
        return attend(module, query, key, value, valid, scale).transpose(1, 2).contiguous(), None
    return fn


def _valid_keys(mask, causal: bool):
    """(B, T) bool of real keys (None: no padding) from an attention function's mask: a causal one's last row; a
    bidirectional one's diagonal (each real token sees itself, in ModernBERT's local bands too)."""
    if mask is None or mask.dim() == 2:
        return None if mask is None else mask.bool()
    row = mask[:, 0, -1, :] if causal or mask.shape[-2] == 1 else mask[:, 0].diagonal(dim1=-2, dim2=-1)
    return row if row.dtype == torch.bool else row == 0


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Every transformers Conv1D (weight (in, out)) swapped for the same nn.Linear (weight (out, in)), in place."""
    from transformers.pytorch_utils import Conv1D
    for name, m in list(model.named_modules()):
        if isinstance(m, Conv1D):
            lin = nn.Linear(m.nx, m.nf, device=m.weight.device, dtype=m.weight.dtype)
            with torch.no_grad():
                lin.weight.copy_(m.weight.T)  # (in, out) -> (out, in)
                lin.bias.copy_(m.bias)
            set_module(model, name, lin)
    return model


def set_module(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent, _, name = fqn.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)
