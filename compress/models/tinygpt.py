"""TinyGPT: the project's own small byte-level decoder (nanoGPT style).

Why it exists: the compression explorer needs a model that is small enough to
train on a CPU in minutes, ships with the repo, and whose layers are laid out
so that every compression technique has an easy target:

* every projection is a plain ``nn.Linear`` (quantize / low-rank / prune it),
  attention has separate ``q``, ``k``, ``v``, ``o`` modules
  (``blocks.{i}.attn.q`` ...) and the MLP has ``fc`` and ``proj``
  (``blocks.{i}.mlp.fc`` ...);
* attention infers the number of heads from the tensor shapes at run time
  (``q.view(B, T, -1, head_dim)``), so removing a head is just slicing rows of
  q/k/v and the matching columns of o;
* ``forward(idx)`` returns logits only, so it can be ``torch.jit.trace``d.

Tokens are UTF-8 bytes (vocab 256), so any prompt can be encoded.
The corpus is the standard library's ``pydoc_data.topics`` (Python's own
help() text), so nothing has to be downloaded.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 256  # byte-level: each UTF-8 byte is a token
    block_size: int = 256  # context length in bytes
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 192
    ffn_mult: int = 4  # MLP hidden = ffn_mult * n_embd
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        # Ignore unknown keys so a card can carry extra metadata.
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- model


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        # Stored as a plain int: the head COUNT is never stored, it is read off
        # the q/k/v output width at run time, so pruned heads need no bookkeeping.
        self.head_dim = cfg.n_embd // cfg.n_head
        self.q = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.k = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.v = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.o = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        B, T, _ = x.shape  # (B, T, C)
        hd = self.head_dim
        # (B, T, H*hd) -> (B, H, T, hd); H = width // hd, whatever it is now.
        q = self.q(x).view(B, T, -1, hd).transpose(1, 2)
        k = self.k(x).view(B, T, -1, hd).transpose(1, 2)
        v = self.v(x).view(B, T, -1, hd).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        attend = getattr(self, "attend", None)  # set by an efficient-attention variant (techniques/attention.py)
        y = (attend(self, q, k, v, None, hd ** -0.5) if attend is not None  # (B, H, T, hd), causal either way
             else F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True))
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, H*hd)
        return self.resid_drop(self.o(y))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.ffn_mult * cfg.n_embd)
        self.proj = nn.Linear(cfg.ffn_mult * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):  # (B, T, C)
        return self.drop(self.proj(F.gelu(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x):  # (B, T, C)
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class TinyGPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)  # token embedding
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)  # learned positions
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        # Not weight-tied: with 256 tokens the head is tiny, and an untied head
        # is one more independent nn.Linear the compression code can touch.
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2 trick: shrink the residual-output projections so the residual
        # stream does not grow with depth at init.
        for name, p in self.named_parameters():
            if name.endswith("attn.o.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx):
        B, T = idx.shape  # (B, T) int64 byte ids, T <= block_size
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return self.lm_head(x)  # (B, T, vocab)


# --------------------------------------------------------------------------- tokens


def encode(text: str) -> list[int]:
    """Text -> UTF-8 byte ids (0..255)."""
    return list(text.encode("utf-8"))


def decode(ids) -> str:
    """Byte ids -> text; a cut-off multi-byte character becomes U+FFFD."""
    return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class ByteTokenizer:
    """The slice of the Hugging Face tokenizer API the library uses, for byte ids (pad = 0, a NUL byte)."""
    pad_token_id = 0

    def __call__(self, texts, padding=True, truncation=True, max_length=None, return_tensors="pt"):
        rows = [encode(t)[:max_length] if truncation and max_length else encode(t)
                for t in ([texts] if isinstance(texts, str) else texts)]
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)  # (B, T)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids, skip_special_tokens=True):
        return decode(ids.tolist() if torch.is_tensor(ids) else ids)


# --------------------------------------------------------------------------- corpus


CORPUS_DESCRIPTION = (
    "pydoc_data.topics.topics values joined in sorted key order with '\\n\\n'"
)
SPLIT_DESCRIPTION = (
    "fixed character split: train = first 90% of characters, "
    "val (held out) = last 10% (index int(0.9 * len(text)) onward)"
)
VAL_FRACTION = 0.1


def load_corpus() -> str:
    """Python's own help() topic texts (ships with the standard library).

    Its exact contents depend on the Python version, hence corpus_sha256.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def split_corpus(text: str) -> tuple[str, str]:
    """Fixed held-out split: first 90% of characters train, last 10% val.

    A contiguous tail (not random windows) so no val text leaks into train
    through overlapping windows; topics are in sorted-key order, so val is
    the alphabetically last topics (roughly 'typesseq...' to 'yield').
    """
    cut = int(len(text) * (1 - VAL_FRACTION))
    return text[:cut], text[cut:]


def corpus_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- eval


@torch.no_grad()
def bits_per_char(model: nn.Module, text: str, block_size: int, max_chars: int | None = None,
                  batch_size: int = 32) -> float:
    """Average negative log2-likelihood per character of ``text``.

    = (sum over predicted bytes of -log2 p(byte | previous bytes in window))
      / (number of characters).

    The byte stream is cut into NON-OVERLAPPING windows of ``block_size``
    bytes; window j feeds bytes [jT, jT+T) and predicts bytes [jT+1, jT+T+1),
    so every byte except the very first is predicted exactly once, with
    between 0 and T-1 bytes of context (context resets at each window, which
    makes this a slightly pessimistic but fast and deterministic estimate).
    ``max_chars`` truncates the text first (for quick checks).
    """
    if max_chars is not None:
        text = text[:max_chars]
    n_chars = len(text)
    ids = torch.tensor(encode(text), dtype=torch.long)
    n = ids.numel() - 1  # number of predicted bytes
    if n_chars == 0 or n <= 0:
        return float("nan")
    was_training = getattr(model, "training", False)  # model may be any callable ids -> logits
    if was_training:
        model.eval()
    total_nats = 0.0
    starts = list(range(0, n, block_size))
    try:
        for b in range(0, len(starts), batch_size):
            chunk = starts[b:b + batch_size]
            full = [s for s in chunk if s + block_size <= n]
            if full:  # equal-length windows go through as one batch
                x = torch.stack([ids[s:s + block_size] for s in full])  # (b, T)
                y = torch.stack([ids[s + 1:s + 1 + block_size] for s in full])  # (b, T)
                logits = model(x)  # (b, T, V)
                total_nats += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                              reduction="sum").item()
            for s in chunk:  # the ragged last window, if any
                if s + block_size > n:
                    x = ids[s:n].unsqueeze(0)  # (1, t)
                    y = ids[s + 1:n + 1].unsqueeze(0)  # (1, t)
                    logits = model(x)
                    total_nats += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                                  reduction="sum").item()
    finally:
        if was_training:
            model.train()
    return total_nats / math.log(2) / n_chars


# --------------------------------------------------------------------------- io


def save_tinygpt(model: TinyGPT, out_dir, card: dict) -> None:
    """Write model.safetensors + card.json (card gets the config fields merged in)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)  # save_file may create it owner-only
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")


def load_tinygpt(dir) -> tuple[TinyGPT, dict]:
    """Load ``card.json`` + ``model.safetensors`` (never pickle). Model is in eval mode."""
    from safetensors.torch import load_file

    d = Path(dir)
    card = json.loads((d / "card.json").read_text())
    cfg = GPTConfig.from_dict(card.get("config", card))
    model = TinyGPT(cfg)
    model.load_state_dict(load_file(str(d / "model.safetensors")))
    model.eval()
    return model, card
