"""Dropping an unused pooler: BERT, RoBERTa and MPNet carry a pooler (a hidden x hidden Linear and a tanh over the
first token) for their pre-training's next-sentence task. A sentence embedding here is the mean of the last hidden
states (sentence-transformers' recipe), which never reads it: MiniLM's is 0.59 MB in fp32, 0.15 MB at 8 bits, 3% of
the 20x preset's budget. Dropped, the model computes the same embeddings; only its `pooler_output` is gone."""
import torch.nn as nn

from ..errors import CompressError
from ..models.adapters import set_module

TEACH = ("Drop the unused pooler: BERT-style encoders keep a pooler (a Linear and a tanh over the first token) from "
         "their pre-training; sentence embeddings here are the mean of the last hidden states, which never read it, so "
         "dropping it changes no output and saves its weights (MiniLM: 0.59 MB in fp32, 0.15 MB at 8 bits). Its "
         "`pooler_output` is gone: keep it if your own code reads that.")


def refuse(b, r) -> str | None:
    if not r.drop_pooler:
        return None
    if r.static:
        return "the static table is the whole model: it has no pooler"
    if b is not None and b.adapter.pooler_module(b.model) is None:
        return f"{b.name} has no pooler to drop"
    return None


def drop(model: nn.Module, adapter) -> nn.Module:
    """The model without its pooler, in place (the family's forward skips a pooler that is None)."""
    if adapter.pooler_module(model) is None:
        raise CompressError("this model has no pooler to drop")
    set_module(model, adapter.pooler, None)
    return model
