"""compress: transformer compression trade-offs, measured. Never imports streamlit."""
from .recipe import ALLOCATIONS, EMB_BITS, HEAD_SCORES, QUANT_MODES, RANK_MODES, RUNTIMES, CompressError, Recipe
from .models import BUNDLED, ModelBundle, load_model
from .uploads import FAMILIES, MAX_PARAMS, MAX_UPLOAD_BYTES, load_upload
from .adapters import ADAPTERS, conv1d_to_linear, tied_embeddings
from .spectrum import Spectrum, layer_report, select_ranks, spectra
from .factorize import LowRankEmbedding, LowRankLinear, apply_factorize, factorize_embeddings
from .quantize import DEVICES as QUANT_DEVICES, LowBitEmbedding, apply_quantize, low_bit_embeddings
from .measure import count_params, cpu_info, gpu_info, latency, size_breakdown, size_bytes
from .evaluate import complete, eval_set, next_token_agreement, quality, search
from .heal import HealResult, heal_texts
from .sensitivity import allocate
from .layers import block_influence, choose_layers, drop_layers
from .pipeline import (benchmark, compress, layer_sensitivity, load_compressed, numbers, report, save_compressed,
                       workload)

__all__ = [
    # recipe
    "Recipe", "CompressError", "RANK_MODES", "QUANT_MODES", "HEAD_SCORES", "ALLOCATIONS", "RUNTIMES", "EMB_BITS",
    # models
    "BUNDLED", "ModelBundle", "load_model",
    # uploads and architecture adapters
    "load_upload", "MAX_UPLOAD_BYTES", "MAX_PARAMS", "FAMILIES", "ADAPTERS", "conv1d_to_linear", "tied_embeddings",
    # techniques
    "block_influence", "choose_layers", "drop_layers", "Spectrum", "spectra", "select_ranks", "layer_report", "LowRankLinear", "apply_factorize", "LowRankEmbedding", "factorize_embeddings",
    "apply_quantize", "QUANT_DEVICES", "LowBitEmbedding", "low_bit_embeddings", "HealResult", "heal_texts", "layer_sensitivity", "allocate",
    # measurement and quality
    "size_bytes", "size_breakdown", "count_params", "latency", "cpu_info", "gpu_info", "quality", "search", "eval_set",
    "next_token_agreement", "complete",
    # pipeline
    "compress", "benchmark", "numbers", "report", "workload", "save_compressed", "load_compressed",
]
