"""Low-rank factorization of Linear layers with spectral init (the article's FactorizedLinear, fixed).

W (out, in) ~= U_r sqrt(S_r) @ sqrt(S_r) Vh_r. Unlike the article's version, which multiplied its two
factors on every call, the factors are two plain nn.Linear, so dynamic int8 quantizes them too.
"""
import torch
import torch.nn as nn

from .adapters import set_module


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
        if r is not None:
            sp = spec[name] if spec else None
            svd = (sp.u, sp.s, sp.vh) if sp is not None else None
            set_module(model, name, LowRankLinear.from_linear(model.get_submodule(name), r, svd))
    return model
