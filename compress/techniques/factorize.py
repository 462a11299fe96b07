"""Low-rank factorization of Linear layers with spectral init (the article's FactorizedLinear, fixed).

W (out, in) ~= U_r sqrt(S_r) @ sqrt(S_r) Vh_r. Unlike the article's version, which multiplied its two
factors on every call, the factors are two plain nn.Linear, so dynamic int8 quantizes them too.
"""
import torch
import torch.nn as nn

from ..models.adapters import set_module, tied_embeddings
from ..serve.cancel import checkpoint
from ..errors import CompressError

TEACH = ("Low-rank factorization: each Linear W (m x n) becomes two thinner ones, rank r, initialised from the SVD "
         "(spectral init). Saves params when r (m + n) < m n. Expect quality to drop fast below ~0.5 without healing: "
         "the article says it 'definitely needs fine-tuning'. budget mode: spectral spends the budget where singular "
         "values carry most energy per parameter; sensitivity where cutting a layer measurably hurts quality most "
         "(each layer is cut and measured once).")


EMB_TEACH = ("Embedding factorization: the token table (vocab x hidden; half of MiniLM's weights, and most of what is "
             "left after the other techniques) becomes vocab x r rows times an r x hidden matrix, from its SVD. Block "
             "techniques never touch it. Heal afterwards. At the same size a 2-bit table keeps more.")


class LowRankLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)  # (r, in)
        self.up = nn.Linear(rank, out_features, bias=bias)    # (out, r)

    @classmethod
    def from_linear(cls, layer: nn.Linear, rank: int, svd=None) -> "LowRankLinear":
        """Spectral init: up = U_r sqrt(S_r), down = sqrt(S_r) Vh_r. svd = (u, s, vh) if already known."""
        w = layer.weight.detach()
        u, s, vh = svd if svd is not None else torch.linalg.svd(w.double(), full_matrices=False)
        s = torch.as_tensor(s, dtype=torch.float64)
        root = s[:rank].sqrt()
        new = cls(layer.in_features, layer.out_features, rank, layer.bias is not None)
        with torch.no_grad():
            new.up.weight.copy_((u[:, :rank].double() * root).to(w.dtype))
            new.down.weight.copy_((root[:, None] * vh[:rank].double()).to(w.dtype))
            if layer.bias is not None:
                new.up.bias.copy_(layer.bias)
        return new

    def forward(self, x):  # (..., in) -> (..., r) -> (..., out)
        return self.up(self.down(x))

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}"


def apply_factorize(model: nn.Module, ranks: dict[str, int | None], spec: dict | None = None) -> nn.Module:
    """Swap every layer with a rank for a LowRankLinear (in place); None keeps the layer dense.
    spec: the layers' Spectrum (from spectrum.compute_spectra) so no SVD is computed twice."""
    for name, r in ranks.items():
        checkpoint()
        if r is not None:
            sp = spec[name] if spec else None
            svd = (sp.u, sp.s, sp.vh) if sp is not None else None
            set_module(model, name, LowRankLinear.from_linear(model.get_submodule(name), r, svd))
    return model


class LowRankEmbedding(nn.Module):
    """A (vocab, hidden) token table as (vocab, r) rows times an (r -> hidden) Linear. Small models keep
    much of their size in this table (MiniLM: half), which block techniques never touch."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.emb = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx)  # (V, r): int8 per-row later
        self.up = nn.Linear(rank, embedding_dim, bias=False)                     # (C, r)

    @classmethod
    def from_embedding(cls, table: nn.Embedding, rank: int) -> "LowRankEmbedding":
        """E (V, C) ~= (U_r S_r) @ Vh_r: rows keep the singular values, so the int8 row scales see them."""
        w = table.weight.detach()
        u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        new = cls(table.num_embeddings, table.embedding_dim, rank, table.padding_idx)
        with torch.no_grad():
            new.emb.weight.copy_((u[:, :rank] * s[:rank]).to(w.dtype))
            new.up.weight.copy_(vh[:rank].T.to(w.dtype))
        return new

    def forward(self, ids):  # (B, T) -> (B, T, r) -> (B, T, C)
        return self.up(self.emb(ids))

    def extra_repr(self):
        return f"vocab={self.num_embeddings}, dim={self.embedding_dim}, rank={self.rank}"


def factorize_embeddings(model: nn.Module, adapter, ratio: float) -> nn.Module:
    """Word embeddings at rank round(ratio * hidden), in place; kept dense when that would not shrink them."""
    table = model.get_submodule(adapter.word_embeddings)
    if tied_embeddings(model, adapter):
        raise CompressError("this model's output layer shares the word-embedding table (tied weights), so "
                            "factorizing the table would not make the model smaller")
    v, c = table.weight.shape
    r = max(1, round(ratio * min(v, c)))
    if r * (v + c) < v * c:
        set_module(model, adapter.word_embeddings, LowRankEmbedding.from_embedding(table, r))
    return model
