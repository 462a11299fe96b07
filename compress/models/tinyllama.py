"""TinyLlama here: the project's own Llama-architecture decoder (not the TinyLlama-1.1B project of that name).

Why it exists: the Llama family (RMSNorm, rotary positions, grouped-query attention, SwiGLU) needs real
trained weights in the app, the tests and BENCHMARKS; random weights prove shapes, not quality. It is a
plain transformers ``LlamaForCausalLM`` saved as a Hugging Face folder (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json), so it loads exactly as an uploaded Llama folder would.

Tokens: a byte-level BPE that this project trains on the train split of TinyGPT's corpus (Python's
help() topics), so any text encodes (no unknown token) and nothing is downloaded. Training lives in
compress/models/train_tinyllama.py; quality is bits per UTF-8 byte of the held-out split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

ASSET_DIR = Path(__file__).resolve().parents[2] / "assets" / "tinyllama"
BOS, EOS, PAD = "<s>", "</s>", "<pad>"  # ids 0, 1, 2: the trainer puts special tokens first, in this order

TOKENIZER_DESCRIPTION = (
    "byte-level BPE (tokenizers' BpeTrainer, ByteLevel pre-tokenizer without a prefix space, all 256 byte "
    "symbols in the initial alphabet, so no unknown token) trained on the TRAIN split only; special tokens "
    f"{BOS} (bos, prepended by the post-processor), {EOS} (eos), {PAD} (pad)"
)


def build_tokenizer(train_text: str, vocab_size: int = 1024, chunk_chars: int = 10_000):
    """A deterministic byte-level BPE tokenizer trained on ``train_text``, as a PreTrainedTokenizerFast.

    The text is fed in fixed chunks (not lines) so the pair counts, and hence the merges, depend only
    on the text; tokenizer.json's hash goes on the card so a rebuild can be compared.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((train_text[i:i + chunk_chars] for i in range(0, len(train_text), chunk_chars)), trainer)
    # Llama tokenizers prepend <s>; doing the same means tokenizer(text) gives what the model was trained on.
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=256, padding_side="right")


def text_ids(tok, text: str) -> torch.Tensor:
    """The token ids of ``text`` without the bos the post-processor adds: (n,) int64."""
    # the backend directly: the wrapper warns about texts longer than model_max_length, which is what we want here
    return torch.tensor(tok.backend_tokenizer.encode(text, add_special_tokens=False).ids, dtype=torch.long)


def bos_windows(ids: torch.Tensor, bos_id: int, T: int, starts) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [bos, w0 .. w(T-2)] and targets [w0 .. w(T-1)] for each window w = ids[s:s+T].

    Every window starts after a bos, as a prompt does in the app (the tokenizer prepends one), and the bos
    position predicts the window's first token, so each token of the text is predicted exactly once.
    """
    y = torch.stack([ids[s:s + T] for s in starts])  # (B, T)
    x = torch.cat([torch.full((len(starts), 1), bos_id, dtype=torch.long), y[:, :-1]], dim=1)  # (B, T)
    return x, y


@torch.no_grad()
def bits_per_byte(model, tok, text: str, block_size: int, max_chars: int | None = None,
                  batch_size: int = 16) -> float:
    """Negative log2-likelihood of ``text`` per UTF-8 byte (= per character on ASCII text, like TinyGPT's).

    The token stream is cut into NON-OVERLAPPING windows of ``block_size`` tokens, each fed after a bos
    (see bos_windows), so context resets at each window: a slightly pessimistic, fast, deterministic
    estimate. ``model`` is a transformers causal LM or any callable ids -> logits.
    """
    if max_chars is not None:
        text = text[:max_chars]
    n_bytes = len(text.encode("utf-8"))
    ids = text_ids(tok, text)
    n = ids.numel()
    if n == 0:
        return float("nan")
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    total_nats = 0.0
    starts = list(range(0, n, block_size))
    full = [s for s in starts if s + block_size <= n]
    ragged = [[s] for s in starts if s + block_size > n]  # the last, shorter window, if any
    try:
        for chunk, T in [(full[b:b + batch_size], block_size) for b in range(0, len(full), batch_size)] + \
                        [(r, n - r[0]) for r in ragged]:
            x, y = bos_windows(ids, tok.bos_token_id, T, chunk)
            out = model(x)
            logits = getattr(out, "logits", out)  # (B, T, V)
            total_nats += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
    finally:
        if was_training:
            model.train()
    return total_nats / math.log(2) / n_bytes


def load_tinyllama(path=ASSET_DIR):
    """(model in eval mode, tokenizer, card) from the shipped folder, offline, safetensors only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32,
                                                 local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tok, json.loads((path / "card.json").read_text())


def unigram_bits_per_byte(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int, val_bytes: int) -> float:
    """The baseline a model must beat: bits per byte of val under train's token frequencies (add-one smoothed),
    i.e. a model that knows which tokens are common but uses no context. Uniform over the vocab would be
    log2(vocab_size) bits per token, only ~3.4 bits per byte here, since each token covers ~3 bytes."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    logp = torch.log2(counts / counts.sum())
    return float(-logp[val_ids].sum()) / val_bytes
