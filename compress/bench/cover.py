"""Token coverage of vocabulary pruning (`python -m compress bench --set cover`): what a dropped token reads (each of
vocab.COVERS: nearest kept row, its re-split kept pieces, the kept token nearest by the original's output), unhealed,
on both evaluation sets, and on the sentences holding a token the healing text never used (the tokens pruning drops
first: the words a user's text has and the healing text lacks).
"""
import torch

from ..measure import evaluate
from ..measure.texts import EVAL_SETS, eval_set
from ..table import pipeline
from ..table.recipe import Recipe
from ..techniques import vocab
from ..techniques.heal import heal_texts

RECIPES = [Recipe(vocab=v, vocab_cover=c) for v in (0.25, 0.1) for c in vocab.COVERS]


def unseen(bundle, texts: list[str], healing: list[str]) -> tuple[float, list[bool]]:
    """(share of the texts' tokens the healing text never used, per text: does it hold one)."""
    tok = bundle.tokenizer
    seen = {t for ids in tok(healing, add_special_tokens=False)["input_ids"] for t in ids}
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    total = sum(map(len, ids))
    return sum(t not in seen for s in ids for t in s) / total, [any(t not in seen for t in s) for s in ids]


def rows(base, recipes=RECIPES, log=print) -> list[dict]:
    """A row per recipe: size, quality on each set, and fidelity on the sentences holding an unseen token."""
    healing = heal_texts(base)
    held = {name: unseen(base, eval_set(name)[0], healing) for name in EVAL_SETS}
    out = []
    for r in recipes:
        log(f"cover: {r.describe()}")
        comp = pipeline.compress(base, r)
        row = {"recipe": r.describe(), "size_mb": pipeline.numbers(comp)["size_bytes"] / 1e6,
               **evaluate.quality(comp, base)}
        for name, (share, has) in held.items():
            texts = [s for s, h in zip(eval_set(name)[0], has) if h]
            fid = (evaluate.embed(comp, texts) * evaluate.embed(base, texts)).sum(-1).mean().item()
            row[f"unseen_{name}"], row[f"n_{name}"], row[f"fidelity_unseen_{name}"] = share, len(texts), fid
        index = comp.model.vocab_index
        row["resplit"] = float((index[:, 1] >= 0).float().mean()) if index.dim() == 2 else 0.0
        out.append(row)
    return out


def markdown(base, log=print) -> str:
    got = rows(base, log=log)
    names = list(EVAL_SETS)
    head = ("| recipe | size MB | tokens re-split | " + " | ".join(
        f"fidelity {n} | retrieval {n} | fidelity {n}, sentences with an unseen token" for n in names) + " |")
    lines = [head, "|" + "---|" * (3 + 3 * len(names))]
    for g in got:
        cells = [g["recipe"], f"{g['size_mb']:.2f}", f"{g['resplit']:.0%}"]
        for n in names:
            sfx = "" if n == "project" else f"_{n}"
            cells += [f"{g['fidelity' + sfx]:.3f}", f"{g['retrieval_overlap' + sfx]:.3f}",
                      f"{g['fidelity_unseen_' + n]:.3f} ({g['n_' + n]} sentences)"]
        lines.append("| " + " | ".join(cells) + " |")
    shares = ", ".join(f"{n} {got[0]['unseen_' + n]:.1%}" for n in names)
    return "\n".join(lines) + f"\n\nEvaluation tokens the healing text never used: {shares}.\n"


if __name__ == "__main__":
    from ..models.bundled import load_model
    torch.set_num_threads(1)
    print(markdown(load_model("minilm")))
