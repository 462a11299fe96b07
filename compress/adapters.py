"""Per-architecture facts: where the blocks, attention and FFN live, and what may be factorized.

One Adapter per family; every technique asks the adapter instead of knowing model classes.
Paths inside a block are relative to that block.
"""
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
    embeddings_prefix: str = "embeddings."  # state-dict prefix counted as "embeddings" in sizes

    def block_list(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks)

    def factorizable(self, model: nn.Module) -> list[str]:
        """Fully-qualified names of the Linear layers inside the blocks (not embeddings, head, pooler)."""
        return [f"{self.blocks}.{name}" for name, m in self.block_list(model).named_modules()
                if isinstance(m, nn.Linear)]


ADAPTERS = {
    "bert": Adapter("bert", "encoder.layer", "attention.self.query", "attention.self.key",
                    "attention.self.value", "attention.output.dense", "intermediate.dense",
                    "output.dense", "embeddings.word_embeddings", False, "num_attention_heads"),
}


def forward(model: nn.Module, adapter: Adapter, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One call shape for every family: (B, T) ids -> last hidden states (encoders) or logits (decoders)."""
    out = model(input_ids=ids, attention_mask=mask)
    return out.logits if adapter.causal else out.last_hidden_state


def set_module(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent, _, name = fqn.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)
