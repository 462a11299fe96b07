"""The static end: the whole transformer replaced by one token table distilled from it (Model2Vec's method, Tulkens &
van Dongen 2024: each token through the model, Zipf/SIF weighting, mean pooling), kept in the original's output
width so its sentence embeddings are compared with the original's like any recipe's (fidelity is defined). Healing
then fits the table to the transformer's sentence embeddings of the healing text, labeled once (tokenlearn.py: the
Tokenlearn way). Encoders only.

A sentence's embedding is the mean of its tokens' rows: no attention, no layers; a lookup and an average.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutput

from ..errors import CompressError
from ..serve import membound

TEACH = ("Static (Model2Vec's method, Tulkens & van Dongen 2024): every token of the vocabulary is run through "
         "the model once, its embedding weighted down when frequent (SIF), and a sentence becomes the mean of its "
         "tokens' rows: no attention, no layers, a lookup and an average (MiniLM's: ~110x the real sentences per "
         "second). It loses word order and context, so heal it: the table is fitted to the transformer's "
         "embeddings of the healing text, labeled once (Tokenlearn's way; 'all' texts: more to fit), and "
         "shrink it with the table's own controls (vocabulary, rank or bits, int8). With one attention layer "
         "over the rows (fitted with them) the tokens see each other again, still without positions.")
SIF_A = 1e-5  # SIF's a: a token of probability p is weighted a / (a + p) (Arora et al. 2017; 1e-5 kept the most
#               fidelity of 1e-3, 1e-4, 1e-5 on MiniLM before healing: 0.28, 0.32, 0.39)
BATCH = 1024  # tokens per forward pass while distilling


class Mix(nn.Module):
    """One small self-attention layer over the table's rows (`static_attn`): h + o(softmax(q kᵀ / √d) v), per head,
    padded keys left out, no positions (the rows have none). o starts at zero: before the fit the model is the plain
    table, and the fit (tokenlearn.py) trains the layer with the rows."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads if heads and width % heads == 0 else 1
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        nn.init.zeros_(self.o.weight)
        nn.init.zeros_(self.o.bias)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, c = h.shape
        def split(x):
            return x.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        keep = None
        if mask is not None:  # a text with no real token attends to everything rather than to nothing (NaN)
            real = mask.bool()
            keep = (real | ~real.any(-1, keepdim=True))[:, None, None, :]
        a = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)), attn_mask=keep)
        return h + self.o(a.transpose(1, 2).reshape(b, t, c))


class StaticModel(nn.Module):
    """forward(input_ids, attention_mask) -> the rows of its tokens, as an encoder's last hidden state (the mean pooling
    every encoder gets makes the sentence embedding). The table sits where the adapter looks for the word table
    (`path`: BERT's embeddings.word_embeddings, ModernBERT's embeddings.tok_embeddings), so the table's own techniques
    (rank, int8) apply to it. heads > 0: one small attention layer (Mix) over the rows before the pooling."""

    def __init__(self, table: torch.Tensor, path: str = "embeddings.word_embeddings", heads: int = 0):
        super().__init__()
        holder, self.path = self, path
        for name in path.split(".")[:-1]:
            holder.add_module(name, nn.Module())
            holder = getattr(holder, name)
        holder.add_module(path.rpartition(".")[2], nn.Embedding.from_pretrained(table, freeze=False))
        self.mix = Mix(table.shape[1], heads) if heads else None

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=False, inputs_embeds=None, **_):
        h = self.get_submodule(self.path)(input_ids) if inputs_embeds is None else inputs_embeds
        if self.mix is not None:
            h = self.mix(h, attention_mask)
        return BaseModelOutput(last_hidden_state=h, hidden_states=(h, h) if output_hidden_states else None)


@torch.no_grad()
def distill_table(bundle) -> torch.Tensor:
    """(vocab, hidden): row t = the original's sentence embedding of the one-token text t (its special tokens
    around it, mean-pooled), weighted by SIF under Zipf's law over the vocabulary's order. Once per model."""
    if "static_table" in bundle.cache:
        return bundle.cache["static_table"]
    if bundle.tokenizer is None:
        raise CompressError("the static table is distilled by running each token of the tokenizer through the model; "
                            f"{bundle.name} has no tokenizer")
    n = bundle.vocab_size
    membound.check("distill", bundle.model, bundle.name, extra_mb=n * bundle.info["hidden"] * 4 / 1e6)  # the table
    table = one_token_rows(bundle, range(n)) * sif_weights(range(n), n)[:, None]
    bundle.cache["static_table"] = table
    return table


@torch.no_grad()
def one_token_rows(bundle, ids) -> torch.Tensor:
    """(len(ids), hidden): the original's mean-pooled embedding of each one-token text (its special tokens around
    it), BATCH tokens a forward."""
    from ..models.adapters import forward
    from ..measure.evaluate import mean_pool
    ids, rows = list(ids), []
    before, after = _template(bundle.tokenizer)
    for start in range(0, len(ids), BATCH):
        one = torch.tensor([before + [t] + after for t in ids[start:start + BATCH]])
        mask = torch.ones_like(one)
        rows.append(mean_pool(forward(bundle.model, bundle.adapter, one, mask), mask))
    return torch.cat(rows)


def _template(tok) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a one-token text (BERT: [CLS] | [SEP]; others may put
    all after, or two before), read off its encoding of a word that is one token; else the first of those around
    an empty text before it and the rest after."""
    for word in ("the", "a", "is"):
        plain, full = tok(word, add_special_tokens=False)["input_ids"], list(tok(word)["input_ids"])
        if len(plain) == 1 and full.count(plain[0]) == 1:
            i = full.index(plain[0])
            return full[:i], full[i + 1:]
    pre = list(tok("", add_special_tokens=True)["input_ids"])
    return pre[:1], pre[1:]


def sif_weights(ids, n: int, a: float = SIF_A) -> torch.Tensor:
    """SIF's a / (a + p) of each token, p its probability under Zipf's law over a vocabulary of n in frequency order
    (WordPiece / BPE vocabularies roughly are)."""
    zipf = 1 / torch.arange(1, n + 1, dtype=torch.float32)
    return a / (a + zipf[torch.as_tensor(list(ids), dtype=torch.long)] / zipf.sum())


def apply_static(ctx, attn: bool = False) -> None:
    """The static step: ctx.model becomes a StaticModel of the base's distilled table (a copy: healing trains it);
    attn: with one attention layer over it, as many heads as the original's blocks have."""
    b = ctx.base
    with torch.random.fork_rng():  # the attention layer's start (its q, k, v): seeded, the caller's RNG untouched
        torch.manual_seed(0)
        ctx.model = StaticModel(distill_table(b).clone(), b.adapter.word_embeddings,
                                int(b.info.get("heads") or 1) if attn else 0)
    ctx.applied["kept_blocks"] = []


def refuse(b, r) -> str | None:
    """The table's refusal for the static step (b None: the recipe alone)."""
    if not r.static:
        return None
    other = [n for n, on in (("fewer layers", r.layers), ("head pruning", r.heads), ("FFN narrowing", r.ffn != 1.0),
                             ("FNet", r.fnet), ("an attention variant", r.attention != "none"), ("pooling", r.pool != 1),
                             ("low rank", r.rank_mode != "none"), ("int4", r.quant == "int4")) if on]
    if other:  # the combination first (a Recipe alone is checked without a model)
        return (f"the static table has no blocks, so {other[0]} has nothing to act on (its own size controls: "
                "vocabulary, word-embedding rank or bits, int8)")
    if b is not None and b.adapter.causal:
        return f"a static table gives sentence embeddings; {b.name} is a causal (decoder) model: encoders only"
    if b is not None and b.tokenizer is None:
        return f"the static table is distilled through the tokenizer's tokens; {b.name} has no tokenizer"
    return None
