"""Product quantization of the word table (Jegou, Douze and Schmid 2011, 'Product quantization for nearest neighbor
search'): each row is cut into sub-vectors of `dim` weights; the sub-vectors of each slice of the table are clustered
into 256 codes (k-means); a row is stored as one byte per sub-vector, and each slice keeps its 256 centroids (fp16).
8 weights a code is 1 bit a weight, 6 is 1.33, 4 is 2. Rows that look alike share codes, which packed low-bit rows
(lowbit.py) cannot exploit: on MiniLM, unhealed, every row at 2 bits a weight keeps fidelity 0.985 against packed
2-bit rows' 0.953, and at the 20x recipe's 1.19 MB table 68% of the rows at 1 bit keep more than 36% at 2 bits."""
import contextlib

import torch
import torch.nn as nn

from ..errors import CompressError
from ..models.adapters import set_module, tied_embeddings
from ..serve.cache import LRU, content_key
from ..serve.cancel import checkpoint
from .lowbit import Packed

CODES = 256       # codes per slice: one byte per sub-vector, so every stored byte is a valid code
ROWS = 4096      # rows whose distances to the codes are held at once (1M floats, 4 MB: in cache, where the whole
#  table's 31 MB at once took 30% longer on MiniLM, for the same codes)
FP16_MAX = 65504.0
DIMS = (12, 8, 6, 4)  # weights per code offered: 0.67, 1, 1.33 and 2 bits a weight
TOP_DIM = 4       # the most frequent rows' (top > 0): 2 bits a weight
TOPS = (0, 5, 10, 15, 20, 25)  # the vocabulary's percent at TOP_DIM a code offered (the 20x preset: 20)
ITERS = 15        # Lloyd iterations from 256 rows drawn with seed 0 (deterministic: a replay fits the same codes)
TEACH = ("Product quantization of the word table: each row cut into pieces of 12, 8, 6 or 4 weights; the pieces of "
         "each slice of the table clustered into 256 shared codes (k-means), so a piece is stored as one byte (0.67,"
         " 1, 1.33 or 2 bits a weight) and each slice keeps its 256 centroids. Similar rows share codes, which per-"
         "row rounding cannot use: on MiniLM every row at 2 bits a weight keeps fidelity 0.985 against packed 2-bit "
         "rows' 0.953. Applied before healing, so the blocks learn to work with it; the clustering takes about 10 s "
         "on MiniLM. With vocabulary pruning (rows by frequency), the most frequent rows, a percent of the "
         "vocabulary, can take 4 weights a code with codebooks of their own, the rest 12, 8 or 6; both tiers' "
         "codebooks are then int8. Healing can train the codebooks too (heal the codebooks): the codes stay, each "
         "slice's 256 centroids learn with the blocks, at no cost in bytes.")


def label(dim: int) -> str:
    """A choice of the control: 0 (none) or weights a code."""
    return "none" if dim == 0 else f"{8 / dim:.3g} bit{'s' * (dim != 8)} a weight ({dim} a code)"


def _nearest(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(n,) the nearest of the (k, d) centroids to each of the (n, d) rows (||c||^2 - 2 x.c: one fused matmul), ROWS
    rows at a time."""
    cc = (c * c).sum(-1)[None, :]
    return torch.cat([first_min(torch.addmm(cc, x[i:i + ROWS], c.T, alpha=-2)) for i in range(0, x.shape[0], ROWS)])


def first_min(d: torch.Tensor, g: int = 32) -> torch.Tensor:
    """d.argmin(-1) exactly (the first of equal minima), faster: the first group of g columns whose minimum is the
    least, then the place in it (torch's argmin over 256 columns takes ~18x amin's time; k-means: a third less, the
    same codes on MiniLM's slices)."""
    n, k = d.shape
    if k % g:
        return d.argmin(-1)
    groups = d.view(n, k // g, g)
    best = groups.amin(-1).argmin(-1)
    return best * g + groups[torch.arange(n), best].argmin(-1)


def kmeans(x: torch.Tensor, k: int = CODES, iters: int = ITERS, seed: int = 0,
           int8: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids (k, d) as stored, read as float: fp16, or int8 at one fp16 scale; each row's code (n,), its nearest
    stored centroid) of the rows of x (n, d). Fewer than k rows: the centroids repeat them (k codes always, so any
    byte names one). An emptied centroid stays where it was."""
    n = x.shape[0]
    g = torch.Generator().manual_seed(seed)
    c = x[torch.randperm(n, generator=g)[:k] if n >= k else torch.arange(k) % n].clone()
    for _ in range(iters):
        checkpoint()  # a Cancel of the job ends the clustering here
        a = _nearest(x, c)
        count = torch.bincount(a, minlength=k)[:, None]
        c = torch.where(count > 0, torch.zeros_like(c).index_add_(0, a, x) / count.clamp(min=1), c)
    if int8:
        q, s = to_int8(c)
        c = q.float() * s
    else:
        c = c.half().float()
    return c, _nearest(x, c)


def to_int8(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, fp16-representable scale as a float) of one slice's centroids: c ~ values * scale. On MiniLM's
    table the same fidelity as fp16 centroids (0.9217 / 0.9291 against 0.9217 / 0.9292) in half the bytes."""
    s = (c.abs().max() / 127).half().float()
    s = s if s > 0 else torch.ones(())
    return (c / s).round().clamp(-127, 127).to(torch.int8), s


def check(width: int, dim) -> None:
    """dim must be one of DIMS and divide the rows' width."""
    if isinstance(dim, bool) or dim not in DIMS or not isinstance(width, int) or width < 1 or width % dim:
        raise CompressError(f"product quantization takes pieces of {', '.join(map(str, DIMS))} weights that divide "
                            f"the rows' width ({width}); got {str(dim)[:20]}")


_FITS = LRU("product quantization", 4, "the codes and codebooks of the last tables clustered, by (content, weights a "
           "code): the clustering is deterministic, and an Apply builds its recipe healed and unhealed")


def fit(w: torch.Tensor, dim: int, int8: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 (V, C // dim), codebook (C // dim, 256, dim): fp16, or int8 (int8 True), each slice's scale fp16
    (C // dim,): ones for fp16) of the table w (V, C): about 10 s for MiniLM's 30,522 rows at 8 weights a code, 20 s at
    4, on two cores; a table clustered before is taken from _FITS (copies)."""
    w = w.detach().float().cpu().contiguous()
    check(w.shape[1], dim)
    if not torch.isfinite(w).all() or w.abs().max() > FP16_MAX:
        raise CompressError("the word table holds values that are NaN, infinite or beyond fp16's range (65,504), "
                            "where product quantization stores its codes: use fewer bits per weight instead")
    key = (*content_key(w), dim, int8)
    return tuple(t.clone() for t in _FITS.get_or_make(key, lambda: _fit(w, dim, int8)))


def _fit(w: torch.Tensor, dim: int, int8: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    slices = [kmeans(w[:, i:i + dim].contiguous(), int8=int8) for i in range(0, w.shape[1], dim)]
    codes, books = torch.stack([a for _, a in slices], 1).to(torch.uint8), [c for c, _ in slices]
    if not int8:
        return codes, torch.stack(books).half(), torch.ones(len(books), dtype=torch.float16)
    return codes, *int8_books(books)  # (exactly the values kmeans read its codes from: q * s)


def int8_books(books) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codebooks (S, 256, d), fp16 scales (S,)) of float codebooks, one scale a slice (to_int8)."""
    q, s = zip(*map(to_int8, books))
    return torch.stack(q), torch.stack(s).half()


def centroids(book: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(S, 256, d) the codebooks as float, as a lookup reads them."""
    return book.float() * scale.float()[:, None, None]


def encode(w: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """(V, S) each row's nearest code per slice, for codebooks fitted on other rows (Learn fits on a sample)."""
    x = w.detach().float().cpu().reshape(w.shape[0], book.shape[0], -1)
    return torch.stack([_nearest(x[:, s].contiguous(), book[s].float()) for s in range(book.shape[0])], 1)


def reconstruct(w: torch.Tensor, dim: int) -> torch.Tensor:
    """The table w as PQEmbedding stores it (Learn's figures, the tests)."""
    codes, book, scale = fit(w, dim)
    return PQEmbedding.lookup(codes.long(), centroids(book, scale))


class PQEmbedding(Packed):
    """A token table stored as codes (one byte per `dim` weights) and per-slice codebooks. A lookup gathers the rows'
    codes, then their centroids, then casts them to the output dtype (ONNX Runtime's int8 pass leaves a Gather from an
    fp16 table alone, ortrun._half_gathers, and never rounds an int8 one). top > 0: its first `top` rows (a pruned
    table's most frequent) at TOP_DIM weights a code, with codebooks of their own; both tiers' codebooks in int8, one
    fp16 scale a slice (on MiniLM as good as fp16: fidelity 0.9217 / 0.9291 against 0.9217 / 0.9292)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dim: int, padding_idx=None, top: int = 0):
        super().__init__()
        check(embedding_dim, dim)
        if top:
            check(embedding_dim, TOP_DIM)
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top < num_embeddings:
            raise CompressError(f"the rows at {TOP_DIM} weights a code are 0 to {num_embeddings - 1}, got {top!r}")
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.rows, self.width, self.dim, self.top = num_embeddings, embedding_dim, dim, top
        book = torch.int8 if top else torch.float16
        self.register_buffer("codes", torch.zeros(num_embeddings - top, embedding_dim // dim, dtype=torch.uint8))
        self.register_buffer("codebook", torch.zeros(embedding_dim // dim, CODES, dim, dtype=book))
        if top:
            self.register_buffer("scale", torch.ones(embedding_dim, dtype=torch.float16))  # its slice's, per weight
            self.register_buffer("top_codes", torch.zeros(top, embedding_dim // TOP_DIM, dtype=torch.uint8))
            self.register_buffer("top_codebook", torch.zeros(embedding_dim // TOP_DIM, CODES, TOP_DIM, dtype=book))
            self.register_buffer("top_scale", torch.ones(embedding_dim, dtype=torch.float16))
        self.register_buffer("ref", torch.zeros(0), persistent=False)  # follows .to(dtype): the output dtype

    @classmethod
    def from_embedding(cls, table: nn.Embedding, dim: int, fitted: bool = True, top: int = 0) -> "PQEmbedding":
        """fitted False: codes and codebooks left at zero (a saved model's replay: its file's replace them)."""
        if not isinstance(table, nn.Embedding):
            raise CompressError(f"product quantization takes an nn.Embedding table, not {type(table).__name__}")
        w = table.weight.detach()
        new = cls(*w.shape, dim, table.padding_idx, top).to(w.device)
        if fitted:
            with torch.no_grad():
                for pre, rows, d in (("", w[top:], dim), ("top_", w[:top], TOP_DIM))[:1 + bool(top)]:
                    codes, book, scale = fit(rows, d, int8=bool(top))
                    getattr(new, pre + "codes").copy_(codes)
                    getattr(new, pre + "codebook").copy_(book)
                    if top:
                        getattr(new, pre + "scale").copy_(scale.repeat_interleave(d))
        new.ref = new.ref.to(w.dtype)
        return new

    @staticmethod
    def lookup(codes: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
        """(..., S) codes and (S, 256, d) centroids -> (..., S * d): slice s's codes index rows s * 256 onwards."""
        start = torch.arange(book.shape[0], device=codes.device) * CODES
        return nn.functional.embedding(codes + start, book.reshape(-1, book.shape[-1])).flatten(-2)

    def forward(self, ids):  # (B, T) -> (B, T, C): the rows' codes, then their centroids, read as stored, then cast
        dt = self.ref.dtype  # (exported so, the file keeps the codebooks in 16 or 8 bits; a cast before the lookup
        if not self.top:  # would be folded into a float copy of them)
            return self.lookup(self.codes[ids].long(), self.codebook).to(dt)
        rest = self.lookup(self.codes[(ids - self.top).clamp(min=0)].long(), self.codebook).to(dt) * self.scale.to(dt)
        top = self.lookup(self.top_codes[ids.clamp(max=self.top - 1)].long(), self.top_codebook).to(dt)
        return torch.where((ids < self.top)[..., None], top * self.top_scale.to(dt), rest)

    def extra_repr(self):
        return (f"vocab={self.num_embeddings}, dim={self.embedding_dim}, weights per code={self.dim}, codes={CODES}"
                + (f", first {self.top} rows at {TOP_DIM} a code" if self.top else ""))


def tiered(r) -> bool:
    """The recipe's most frequent rows at TOP_DIM a code: a share chosen, a coarser code for the rest, a pruned table
    (rows by frequency)."""
    return bool(r.emb_pq_top) and top_off(r) is None


def refuse(b, r) -> str | None:
    """The table's refusal of product quantization (b None: the recipe alone)."""
    if tiered(r) and not r.emb_pq_top / 100 < r.vocab:
        return f"keep more of the vocabulary than the {r.emb_pq_top}% whose rows are at {TOP_DIM} weights a code"
    if not r.emb_pq:
        return None
    if r.emb_bits or r.emb_rank != 1:
        return ("choose one way to shrink the word-embedding table: product quantization, fewer bits per weight or a "
                "lower rank")
    if r.static:
        return "the static table is the whole model: store it at 4 or 2 bits a weight (Word-embedding table bits)"
    if b is None:
        return None
    if tied_embeddings(b.model, b.adapter):
        return ("its output layer shares the word-embedding table (tied weights), so a product-quantized table would "
                "change its output layer too")
    width = b.model.get_submodule(b.adapter.word_embeddings).weight.shape[1]
    for d in (r.emb_pq, TOP_DIM)[:1 + tiered(r)]:
        if width % d:
            return f"{b.name}'s word-table rows are {width} wide: pieces of {d} weights do not divide them"
    return None


def top_off(r) -> str | None:
    """Why the share of rows at TOP_DIM a code does nothing in this recipe (the control greyed out), or None."""
    coarser = " or ".join(str(d) for d in DIMS if d != TOP_DIM)
    return None if r.emb_pq not in (0, TOP_DIM) and r.vocab != 1 else \
        f"only with vocabulary pruning and product quantization at {coarser} weights a code"


def heal_off(r) -> str | None:
    return None if r.emb_pq and r.heal_steps else "only with product quantization and healing steps"


def describe(r) -> str:
    return (f"embeddings PQ {r.emb_pq} a code" + (f" ({r.emb_pq_top}% at 4)" if tiered(r) else "")
            + (", codebooks healed" if r.emb_pq_heal and r.heal_steps else ""))


def pq_step(ctx, r) -> None:  # the table's emb_pq step: a replay's codes come from its file
    top = round(r.emb_pq_top / 100 * ctx.base.vocab_size) if tiered(r) else 0
    pq_embeddings(ctx.model, ctx.base.adapter, r.emb_pq, fitted=not ctx.replay, top=top)


def pq_embeddings(model: nn.Module, adapter, dim: int, fitted: bool = True, top: int = 0) -> nn.Module:
    """The word-embedding table product-quantized, `dim` weights a code (its first `top` rows at TOP_DIM), in place
    (refuse() says when not)."""
    if not isinstance(model, nn.Module):
        raise CompressError(f"product quantization takes a model (an nn.Module), not {type(model).__name__}")
    table = model.get_submodule(adapter.word_embeddings)
    if not isinstance(table, nn.Embedding) or tied_embeddings(model, adapter):
        raise CompressError("product quantization takes a plain word-embedding table that no output layer shares")
    set_module(model, adapter.word_embeddings, PQEmbedding.from_embedding(table, dim, fitted, top))
    return model


@contextlib.contextmanager
def trainable_books(model: nn.Module, adapter):
    """Healing with the codebooks: inside, a product-quantized table's codebooks are float Parameters holding the
    centroids (their scales set to one; healing's trainable() takes them, the codes stay); on leaving, stored again as
    before (int8 at a new fp16 scale a slice, or fp16). A table that is not product-quantized: nothing changes."""
    table = model.get_submodule(adapter.word_embeddings)
    names = ("", "top_")[:1 + bool(getattr(table, "top", 0))] if isinstance(table, PQEmbedding) else ()
    for n in names:
        book = table._buffers.pop(n + "codebook").float()
        if table.top:  # the centroids, in the model's units (its scale is per weight, one value a slice)
            book = centroids(book, getattr(table, n + "scale").view(book.shape[0], -1)[:, 0])
            getattr(table, n + "scale").fill_(1)
        table.register_parameter(n + "codebook", nn.Parameter(book))
    try:
        yield
    finally:
        with torch.no_grad():
            for n in names:
                book = table._parameters.pop(n + "codebook").detach()
                if not table.top:
                    table.register_buffer(n + "codebook", book.half())
                    continue
                q, s = int8_books(book)
                table.register_buffer(n + "codebook", q)
                getattr(table, n + "scale").copy_(s.repeat_interleave(book.shape[-1]))
