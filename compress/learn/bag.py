"""The Learn page's static-table figure: a sentence as the mean of its tokens' rows. Each row is the original's
embedding of that token alone, weighted by SIF (a / (a + p), p the token's Zipf probability by vocabulary rank); the
figure shows each token's weight and how close the bag of rows comes to the transformer's own embedding of the
sentence, weighted and not. Only the sentence's tokens are run (one short forward), not the whole vocabulary."""
import torch
import torch.nn.functional as F

from ..errors import CompressError
from . import shown
from ..measure.evaluate import embed
from ..table.recipe import Recipe
from ..techniques import static

MAX_TOKENS = 48  # a figure's bars


@torch.no_grad()
def bag(bundle, text: str, sif_a: float = static.SIF_A) -> dict:
    """tokens, each one's SIF weight, and the cosine to the transformer's sentence embedding of the weighted and the
    plain mean of the rows."""
    if why := static.refuse(bundle, Recipe(static=True)):
        raise CompressError(why)
    if not 0 < sif_a <= 1:
        raise CompressError("SIF's a must be in (0, 1]")
    tok = bundle.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"][:MAX_TOKENS]
    if not ids:
        raise CompressError("the sentence has no tokens")
    rows = static.one_token_rows(bundle, ids)  # (n, C): the static table's rows before their weights
    w = static.sif_weights(ids, bundle.vocab_size, sif_a)
    whole = embed(bundle, [text])[0]  # the transformer's (normalized) embedding of the sentence
    return {"tokens": shown(tok.convert_ids_to_tokens(ids)), "weight": w.tolist(),
            "cosine": float(F.cosine_similarity((w[:, None] * rows).mean(0), whole, dim=0)),
            "cosine_plain": float(F.cosine_similarity(rows.mean(0), whole, dim=0))}
