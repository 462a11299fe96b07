"""Quantization: dynamic int8 (torch.ao, CPU), weight-only int8 word embeddings, fp16/bf16 casts."""
import warnings

import torch
import torch.nn as nn
from torch.ao import quantization as tq

# Where each option runs: shown next to the control, and used to skip GPU timing where it cannot apply.
DEVICES = {
    "none": "any device",
    "int8": "CPU only (torch.ao dynamic int8 kernels: fbgemm on x86, qnnpack on ARM)",
    "fp16": "GPU; on CPU it runs but is usually slower than fp32 (no native fp16 matmul)",
    "bf16": "GPU, or CPUs with AVX512-BF16/AMX; elsewhere emulated and slower than fp32",
}

# Per-channel weight scales: one outlier row no longer crushes the precision of the others.
INT8_LINEAR = tq.per_channel_dynamic_qconfig


def apply_quantize(model: nn.Module, adapter, mode: str, embeddings: bool = True) -> nn.Module:
    """Return the quantized model (int8 builds new modules; casts happen in place)."""
    if mode in ("fp16", "bf16"):
        return model.to(torch.float16 if mode == "fp16" else torch.bfloat16)
    if mode != "int8":
        return model
    spec = {nn.Linear: INT8_LINEAR}
    if embeddings:  # weight-only, per-row scales: word and position tables (not BERT's token types: their
        # default ids are an expanded, non-contiguous buffer the quantized kernel refuses)
        for path in filter(None, (adapter.word_embeddings, adapter.position_embeddings)):
            spec[path] = tq.float_qparams_weight_only_qconfig
    with warnings.catch_warnings():  # torch.ao is deprecated in favour of torchao, but still the fastest eager path here
        warnings.simplefilter("ignore")
        return tq.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
