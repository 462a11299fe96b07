"""Fewer positions: a learned position table keeps a row for every position the model was built for (BERT's 512), but
the texts it reads may be shorter by design: sentence-transformers cuts MiniLM's input at 256 tokens
(max_seq_length), and every measurement here reads at most 128. Cut to its first N rows, the model computes the same
outputs for any text of at most N tokens; a longer one is cut to N tokens (the model card and the tokenizer saved
with it say N). MiniLM's rows 256 to 511: 0.39 MB in fp32, 0.10 MB at 8 bits, 2% of the 20x preset's budget."""
import torch
import torch.nn as nn

from ..errors import CompressError
from ..models.adapters import set_module

CHOICES = (0, 64, 128, 256)  # 0: every position the model has
TEACH = ("Fewer positions: a learned position table has a row for each position the model was built for (MiniLM: "
         "512), while its texts are often shorter by design (sentence-transformers cuts MiniLM's at 256 tokens; "
         "sentence embeddings here read at most 128). Keeping the first N rows changes no output for a text of at most "
         "N tokens and saves the rest (MiniLM at 256: 0.39 MB in fp32, 0.10 MB at 8 bits); a longer text is cut to N "
         "tokens. Rotary models compute their positions and have no table to cut.")


def label(n: int) -> str:
    return "all the model's" if n == 0 else f"the first {n}"


def table(b) -> nn.Embedding | None:
    """The model's learned position table, where it has one and a transformers config that declares it."""
    path, cfg = b.adapter.position_embeddings, getattr(b.model, "config", None)
    if not path or getattr(cfg, "max_position_embeddings", None) is None:
        return None
    t = b.model.get_submodule(path)
    return t if isinstance(t, nn.Embedding) else None


def refuse(b, r) -> str | None:
    if not r.positions:
        return None
    if r.static:
        return "the static table has no positions: it reads a text as a bag of tokens"
    if b is None:
        return None
    if table(b) is None:
        return (f"{b.name} has no position table declared by a transformers config (max_position_embeddings) to "
                "cut: rotary positions are computed, not stored")
    if r.positions >= b.info["max_positions"]:
        return f"{b.name} reads at most {b.info['max_positions']} tokens already: {r.positions} positions cut nothing"
    return None


def cut(model: nn.Module, adapter, n: int) -> int:
    """The model with only the position rows n tokens read (RoBERTa's and MPNet's start after the padding id), in
    place; its config and its embeddings' position and token-type id buffers follow. Returns the rows kept."""
    old = model.get_submodule(adapter.position_embeddings)
    rows = n + adapter.position_offset(model.config)
    if not isinstance(old, nn.Embedding) or not 0 < rows < old.num_embeddings:
        raise CompressError(f"this model's position table cannot be cut to {n} positions")
    new = nn.Embedding(rows, old.embedding_dim, padding_idx=old.padding_idx).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[:rows])
    set_module(model, adapter.position_embeddings, new)
    owner = model.get_submodule(adapter.position_embeddings.rpartition(".")[0])
    for name in ("position_ids", "token_type_ids"):  # BERT's (1, positions) buffers, sliced by a text's length
        buf = getattr(owner, name, None)
        if isinstance(buf, torch.Tensor) and buf.dim() == 2 and buf.shape[1] > rows:
            setattr(owner, name, buf[:, :rows].clone())
    model.config.max_position_embeddings = rows
    return rows


def step(ctx, r) -> None:  # (the compressed bundle's info["max_positions"] follows: pipeline.finish)
    cut(ctx.model, ctx.base.adapter, r.positions)
