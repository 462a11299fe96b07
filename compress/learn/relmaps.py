"""The Learn page's attention-relations figure: what healing with `heal_relations` (MiniLM v2) copies, on a sentence:
the original's last block's query-query, key-key and value-value relations per relation head, each row a query token
whose weights over the keys sum to 1, and how peaked each relation is (mean entropy of its rows, in bits). The numbers
are techniques/relations.py's (one short forward of the sentence's first MAX_TOKENS tokens)."""
import torch

from ..errors import CompressError
from . import shown
from ..models.adapters import forward
from ..table.recipe import Recipe
from ..techniques import relations
from .attention import entropy

MAX_TOKENS = 48  # a figure's rows and columns
KINDS = {"q": "query-query", "k": "key-key", "v": "value-value"}


@torch.no_grad()
def relation_maps(bundle, text: str) -> dict:
    """tokens, maps (kind -> (R, T, T) numpy), heads (R per kind), entropy (kind -> (R,) bits)."""
    if why := relations.refuse(bundle, Recipe(heal_steps=1, heal_relations=True)):
        raise CompressError(why)
    if bundle.tokenizer is None:
        raise CompressError("this model has no tokenizer, so there is no sentence to draw")
    enc = bundle.tokenizer(text, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if ids.shape[1] < 2:
        raise CompressError("the sentence has fewer than two tokens: a relation needs two")
    with relations.capture(bundle.model, bundle.adapter) as out:
        forward(bundle.model, bundle.adapter, ids, mask)
    maps, heads, ent = {}, {}, {}
    for n in KINDS:
        heads[n] = relations.heads(out[n].shape[-1], out[n].shape[-1])
        maps[n] = relations.log_relations(out[n], heads[n], mask.bool())[0].exp().numpy()
        ent[n] = entropy(maps[n])
    tokens = shown(bundle.tokenizer.convert_ids_to_tokens(ids[0]))
    return {"tokens": tokens, "maps": maps, "heads": heads, "entropy": ent}
