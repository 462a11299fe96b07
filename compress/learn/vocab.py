"""The Learn page's vocabulary figure: the tokens of a sentence at a vocabulary fraction, kept or dropped, and what a
dropped one reads under each cover (nearest kept row, the mean of its re-split kept pieces, the kept token whose
output is nearest, or a weighted sum of kept rows that rebuilds its own), with the cosine of that to its own row in
the original table. Nearest, resplit and sparse compare only the sentence's tokens with the kept rows; output needs every token of the vocabulary run through the model once
(static.distill_table, kept in the bundle's cache): only when asked (the page runs it as a job first). The rows kept
are the healing text's tokens by count, or (keep_by "english") by their share of it plus of English."""
import torch

from ..errors import CompressError
from . import shown
from ..table.recipe import Recipe
from ..techniques import vocab as V
from ..techniques.static import distill_table
from ..techniques.heal import heal_texts

MAX_TOKENS = 48  # a figure's bars
KEEPS = V.KEEPS  # which rows are kept


def cover(bundle, text: str, fraction: float, output: bool = False, keep_by: str = "text") -> dict:
    """tokens, kept (under each cover), what each reads (token strings), and its cosine to its own row; output: the
    output cover too; keep_by: which rows are kept (V.KEEPS)."""
    if why := V.refuse(bundle, Recipe(vocab=fraction, vocab_cover="resplit")):
        raise CompressError(why)
    tok, n = bundle.tokenizer, round(fraction * bundle.vocab_size)
    table = bundle.model.get_submodule(bundle.adapter.word_embeddings).weight.detach().float()
    unit = torch.nn.functional.normalize(table, dim=-1)
    ids = tok(text, add_special_tokens=False)["input_ids"][:MAX_TOKENS]
    out = {"tokens": tok.convert_ids_to_tokens(ids), "kept": {}, "reads": {}, "cosine": {}}
    for name in V.COVERS if output else [c for c in V.COVERS if c != "output"]:
        near = torch.nn.functional.normalize(distill_table(bundle), dim=-1) if name == "output" else unit
        keep = V.cached_order(bundle, heal_texts(bundle), alphabet=name == "resplit", keep=keep_by)[:n]
        kept = {tok.convert_ids_to_tokens(t): r for r, t in enumerate(keep)}
        reads, weights, rows_of = [], [], torch.tensor(keep, dtype=torch.long)
        near_kept, table_kept = near[rows_of], table[rows_of]  # (once: a list index per token took seconds)
        for t, s in zip(ids, out["tokens"]):
            rows = [kept[s]] if s in kept else V.split(s, kept, V._prefix(tok)) if name == "resplit" else None
            w = None
            if name == "sparse" and not rows:  # its atoms and their weights
                rows, w = (x[0].tolist() for x in V.pursuit(table[t:t + 1], table_kept))
            if not rows or len(rows) > V.CAP:  # nearest: the kept row of highest cosine (output: of its output)
                rows = [int((near_kept @ near[t]).argmax())]
            reads.append(rows)
            weights.append(w or [1 / len(rows)] * len(rows))  # a mean: each 1/n
        out["kept"][name] = [s in kept for s in out["tokens"]]
        words = [shown(tok.convert_ids_to_tokens([keep[r] for r in rows])) for rows in reads]
        out["reads"][name] = [" ".join(f"{x:+.2f} {p}" for x, p in zip(w, ps)) if name == "sparse" and len(ps) > 1
                              else " + ".join(ps) for ps, w in zip(words, weights)]
        means = [(torch.tensor(w)[:, None] * table[[keep[r] for r in rows]]).sum(0) for rows, w in zip(reads, weights)]
        out["cosine"][name] = [float(unit[t] @ torch.nn.functional.normalize(m, dim=0)) for t, m in zip(ids, means)]
    return {**out, "tokens": shown(out["tokens"])}
