"""Train the bundled Llama-architecture decoder (assets/tinyllama) on a CPU, on TinyGPT's corpus and split.

    python -m compress.models.train_tinyllama [--max-steps N] [--out assets/tinyllama]

1. A byte-level BPE tokenizer (vocab 1024, <s> </s> <pad>) is trained on the train split only.
2. A transformers LlamaForCausalLM (RMSNorm, rotary positions, 8 query heads sharing 2 key/value heads,
   SwiGLU, tied embeddings) is trained: seeded AdamW, linear warmup then cosine decay by step / max_steps,
   so a run is defined by its step count; --minutes only stops a run that is far slower than expected
   (and the card then says how many steps ran). Batches are random windows of the train split's tokens,
   each after a <s> (what the tokenizer prepends to a prompt).
3. Every --eval-every steps the FULL held-out split is scored in bits per UTF-8 byte and the best weights
   so far are kept (the corpus is small: the model overfits after a while).
4. The best weights are written as a Hugging Face folder (config.json, model.safetensors, tokenizer files)
   with card.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from compress.models.tinygpt import CORPUS_DESCRIPTION, SPLIT_DESCRIPTION, corpus_sha256, load_corpus, split_corpus
from compress.models.tinyllama import (TOKENIZER_DESCRIPTION, bits_per_byte, bos_windows, build_tokenizer, text_ids,
                                       unigram_bits_per_byte)
from compress.models.train_tinygpt import adamw, get_batch, log, loop_args, train_loop

CARD_CONFIG_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "max_position_embeddings", "hidden_act", "rms_norm_eps",
                    "rope_theta", "rope_parameters", "tie_word_embeddings")
VAL_SLICE_CHARS = 20_000  # tests/test_tinyllama.py re-measures bits per byte on val[:VAL_SLICE_CHARS]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or "unknown"


def llama_config(args, tok):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.intermediate,
                       num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       num_key_value_heads=args.kv_heads, max_position_embeddings=args.max_positions,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def parse_args(argv):
    ap = loop_args(__doc__, "assets/tinyllama", minutes=40.0, minutes_help="safety stop only; the schedule is by steps",
                   max_steps=800, threads=1, batch_size=16, warmup=50, eval_every=50)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=688, help="SwiGLU width (~8/3 x hidden, as Llama)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--max-positions", type=int, default=256)
    return ap.parse_args(argv)


def main(argv=None) -> None:  # over 60 lines: the training script, one pass top to bottom (data, loop, card)
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "compress.models.train_tinyllama", *(sys.argv[1:] if argv is None else argv)])
    from transformers import LlamaForCausalLM

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    text = load_corpus()
    train_text, val_text = split_corpus(text)
    tok = build_tokenizer(train_text, args.vocab)
    train_ids = text_ids(tok, train_text)
    log(f"corpus: {len(text):,} chars, train {len(train_text):,} / val {len(val_text):,} chars; "
        f"tokenizer {len(tok)} tokens: train {train_ids.numel():,} tokens "
        f"({len(train_text.encode()) / train_ids.numel():.2f} bytes/token)")

    cfg = llama_config(args, tok)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())  # tied: the embedding is counted once
    log(f"params: {n_params:,}")
    opt = adamw(model, args)
    gen = torch.Generator().manual_seed(args.seed)  # batch sampling RNG
    T, B = args.block_size, args.batch_size

    def batch_loss():
        # get_batch's windows, one token shorter, each after a <s> (bos_windows): T tokens in, T predicted
        w, _ = get_batch(train_ids, T, B, gen)
        x, y = bos_windows(w.reshape(-1), tok.bos_token_id, T, range(0, B * T, T))
        logits = model(x).logits  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    # the schedule is by steps alone: the time cap only stops a run
    best_state, best_step, step, train_minutes = train_loop(
        model, opt, args, batch_loss, lambda: bits_per_byte(model, tok, val_text, T), "bits/byte",
        progress=lambda step, elapsed: step / args.max_steps, log_every=10)

    model.load_state_dict(best_state)
    model.eval()
    val_bpb = bits_per_byte(model, tok, val_text, T)
    val_bpb_slice = bits_per_byte(model, tok, val_text, T, max_chars=VAL_SLICE_CHARS)
    val_bytes, val_ids = len(val_text.encode("utf-8")), text_ids(tok, val_text)
    log(f"best step {best_step}: val bits/byte {val_bpb:.4f} (slice {val_bpb_slice:.4f})")

    out = Path(args.out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    for f in out.iterdir():
        f.chmod(0o644)  # save_file may create files owner-only
    card = {
        "name": "tinyllama",
        "description": "Llama-architecture decoder (transformers LlamaForCausalLM: RMSNorm, rotary positions, "
                       "grouped-query attention, SwiGLU, tied embeddings) trained by this project on Python's "
                       "help() topics (pydoc_data.topics); not the TinyLlama-1.1B project",
        "config": {k: v for k, v in cfg.to_dict().items() if k in CARD_CONFIG_KEYS},
        "params": n_params,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": __import__("transformers").__version__,
        "tokenizers_version": __import__("tokenizers").__version__,
        "tokenizer": TOKENIZER_DESCRIPTION,
        "tokenizer_sha256": hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest(),
        "corpus": CORPUS_DESCRIPTION,
        "corpus_sha256": corpus_sha256(text),
        "corpus_chars": len(text),
        "split": SPLIT_DESCRIPTION,
        "train_chars": len(train_text),
        "train_tokens": train_ids.numel(),
        "val_chars": len(val_text),
        "val_bytes": val_bytes,
        "val_tokens": val_ids.numel(),
        "val_bits_per_byte_uniform": math.log2(len(tok)) * val_ids.numel() / val_bytes,  # baselines: no learning
        "val_bits_per_byte_unigram": unigram_bits_per_byte(train_ids, val_ids, len(tok), val_bytes),
        "val_bits_per_byte": val_bpb,
        "val_bits_per_char": val_bpb * val_bytes / len(val_text),  # TinyGPT's unit (its card's val_bpc)
        "val_bpb_method": "bits_per_byte: non-overlapping windows of block_size tokens over the FULL val split, "
                          "each after a <s>, so every val token is predicted once; nats / ln 2 / UTF-8 bytes",
        "val_bits_per_byte_slice": val_bpb_slice,
        "val_slice_chars": VAL_SLICE_CHARS,
        "block_size": T,
        "steps_run": step,
        "max_steps": args.max_steps,
        "best_step": best_step,
        "train_minutes": round(train_minutes, 2),
        "batch_size": B,
        "optimizer": f"AdamW lr={args.lr} min_lr={args.min_lr} warmup={args.warmup} cosine by step/max_steps "
                     f"wd={args.weight_decay} (matrices only) betas=(0.9,0.99) clip=1.0",
        "seed": args.seed,
        "threads": args.threads,
        "machine_cpu": cpu_name(),
        "command": command,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    log(f"wrote {out}: {', '.join(sorted(f.name for f in out.iterdir()))}")


if __name__ == "__main__":
    main()
