"""Train TinyGPT on Python's own help() text (pydoc_data.topics) on a CPU.

    python -m compress.models.train_tinygpt [--minutes M] [--out assets/tinygpt]

Seeded; AdamW; linear warmup then cosine decay driven by progress =
max(step / max_steps, elapsed / time cap), so the schedule finishes whether
the time cap or the step cap comes first. Batches are random windows of the
train split. Every --eval-every steps the FULL held-out split is scored and
the best weights so far are kept (the corpus is small: the model overfits
after a while, so the last step is not the best one). At the end the best
weights are written to OUT/model.safetensors with a card.json.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import shlex
import sys
import time

import torch
import torch.nn.functional as F

from compress.models.tinygpt import (
    CORPUS_DESCRIPTION,
    SPLIT_DESCRIPTION,
    GPTConfig,
    TinyGPT,
    bits_per_char,
    corpus_sha256,
    encode,
    load_corpus,
    save_tinygpt,
    split_corpus,
)

VAL_SLICE_CHARS = 20_000  # the test re-measures bpc on val[:VAL_SLICE_CHARS]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def get_batch(ids: torch.Tensor, T: int, B: int, gen: torch.Generator):
    """B random windows of T ids (inputs) and the same windows one id later (targets); shared with train_tinyllama."""
    ix = torch.randint(0, ids.numel() - T - 1, (B,), generator=gen)
    x = torch.stack([ids[i:i + T] for i in ix.tolist()])  # (B, T)
    y = torch.stack([ids[i + 1:i + 1 + T] for i in ix.tolist()])  # (B, T)
    return x, y


def lr_at(step: int, progress: float, lr: float, min_lr: float, warmup: int) -> float:
    """Linear warmup for `warmup` steps, then cosine from lr to min_lr as progress goes 0 -> 1."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def loop_args(doc: str, out: str, *, minutes: float, minutes_help: str, max_steps: int, threads: int,
              batch_size: int, warmup: int, eval_every: int) -> argparse.ArgumentParser:
    """A parser holding what train_loop and the batches read (each script adds its model's shape)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=out)
    ap.add_argument("--minutes", type=float, default=minutes, help=minutes_help)
    ap.add_argument("--max-steps", type=int, default=max_steps)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--block-size", type=int, default=128, help="tokens per training window")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=eval_every)
    return ap


def adamw(model: torch.nn.Module, args) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only, not on biases and norm gains (embeddings are matrices too, but
    decaying a small token table is harmless either way)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.99))


def train_loop(model, opt, args, batch_loss, evaluate, unit: str, progress, log_every: int):
    """Steps of batch_loss() (clipped at norm 1, lr by lr_at at progress(step, seconds)) until args.max_steps or
    args.minutes; every args.eval_every steps and at the end, evaluate() (lower is better) picks the best weights
    so far: the corpus is small and the model overfits after a while, so the last step is not the best one.
    Returns (best state_dict, best step, steps run, minutes)."""
    best, best_state, best_step = float("inf"), None, 0
    t0, step, ema = time.time(), 0, None
    while True:
        elapsed = time.time() - t0
        done = step >= args.max_steps or elapsed >= args.minutes * 60.0
        if step > 0 and (step % args.eval_every == 0 or done):
            score = evaluate()
            tag = ""
            if score < best:
                best, best_state, best_step, tag = score, copy.deepcopy(model.state_dict()), step, " *best"
            log(f"step {step:6d}  {elapsed / 60:5.1f} min  train loss {ema:.3f} nats  val {unit} {score:.4f}{tag}")
        if done:
            return best_state, best_step, step, (time.time() - t0) / 60.0
        lr = lr_at(step, progress(step, elapsed), args.lr, args.min_lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        step += 1
        if step % log_every == 0:
            log(f"step {step:6d}  {elapsed / 60:5.1f} min  lr {lr:.2e}  loss {ema:.3f}")


def main(argv=None) -> None:  # over 60 lines: the training script, one pass top to bottom (args, data, loop, card)
    ap = loop_args(__doc__, "assets/tinygpt", minutes=18.0, minutes_help="wall-clock training cap",
                   max_steps=100_000, threads=2, batch_size=32, warmup=100, eval_every=200)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=192)
    ap.add_argument("--dropout", type=float, default=0.1)
    args = ap.parse_args(argv)
    command = shlex.join(["python", "-m", "compress.models.train_tinygpt", *(sys.argv[1:] if argv is None else argv)])

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    text = load_corpus()
    train_text, val_text = split_corpus(text)
    train_ids = torch.tensor(encode(train_text), dtype=torch.long)
    log(f"corpus: {len(text):,} chars, train {len(train_text):,} / val {len(val_text):,} chars")

    cfg = GPTConfig(block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head,
                    n_embd=args.n_embd, dropout=args.dropout)
    model = TinyGPT(cfg)
    n_params = model.num_params()
    log(f"config: {cfg}\nparams: {n_params:,}")

    opt = adamw(model, args)
    gen = torch.Generator().manual_seed(args.seed)  # batch sampling RNG
    T, B = cfg.block_size, args.batch_size
    cap_s = args.minutes * 60.0

    def batch_loss():
        x, y = get_batch(train_ids, T, B, gen)
        logits = model(x)  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    # the schedule ends with whichever cap comes first
    best_state, best_step, step, train_minutes = train_loop(
        model, opt, args, batch_loss, lambda: bits_per_char(model, val_text, T), "bpc",
        progress=lambda step, elapsed: max(step / args.max_steps, elapsed / cap_s), log_every=50)

    model.load_state_dict(best_state)
    model.eval()
    val_bpc = bits_per_char(model, val_text, T)
    val_bpc_slice = bits_per_char(model, val_text, T, max_chars=VAL_SLICE_CHARS)
    log(f"best step {best_step}: val bpc {val_bpc:.4f} (slice {val_bpc_slice:.4f})")

    card = {
        "name": "tinygpt",
        "description": "byte-level TinyGPT trained on Python's help() topics (pydoc_data.topics)",
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "params": n_params,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "corpus": CORPUS_DESCRIPTION,
        "corpus_sha256": corpus_sha256(text),
        "corpus_chars": len(text),
        "split": SPLIT_DESCRIPTION,
        "train_chars": len(train_text),
        "val_chars": len(val_text),
        "val_bpc": val_bpc,
        "val_bpc_method": "bits_per_char: non-overlapping windows of block_size bytes over the FULL val split",
        "val_bpc_slice": val_bpc_slice,
        "val_slice_chars": VAL_SLICE_CHARS,
        "steps_run": step,
        "best_step": best_step,
        "train_minutes": round(train_minutes, 2),
        "batch_size": B,
        "optimizer": f"AdamW lr={args.lr} min_lr={args.min_lr} warmup={args.warmup} "
                     f"cosine by max(step/max_steps, time/cap) wd={args.weight_decay} betas=(0.9,0.99) clip=1.0",
        "seed": args.seed,
        "threads": args.threads,
        "command": command,
    }
    save_tinygpt(model, args.out, card)
    log(f"wrote {args.out}/model.safetensors and card.json")


if __name__ == "__main__":
    main()
