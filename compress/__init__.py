"""compress: transformer compression trade-offs, measured. Never imports streamlit."""
from .errors import CompressError
from .steps import FIELDS, STEPS, field_reason, refusal
from .recipe import Recipe
from .bundle import ModelBundle
from .models import BUNDLED, load_model
from .uploads import FAMILIES, MAX_PARAMS, MAX_UPLOAD_BYTES, load_local, load_upload, local_root
from .adapters import ADAPTERS, conv1d_to_linear, tied_embeddings
from .spectrum import Spectrum, has_spectra, layer_report, select_ranks, spectra
from .factorize import LowRankEmbedding, LowRankLinear, apply_factorize, factorize_embeddings
from .lowbit import LowBitEmbedding, low_bit_embeddings
from .quantize import apply_quantize
from .measure import BUSY, count_params, cpu_info, gpu_info, latency, machine_line, size_breakdown, size_bytes
from .evaluate import complete, eval_set, metric_label, next_token_agreement, quality, search, workload
from .texts import EVAL_SETS, heal_corpus, near_duplicates
from .heal import MAX_HEAL_BYTES, HealResult, heal_texts
from .sensitivity import allocate, cached as layer_sensitivity
from .layers import block_influence, choose_layers, drop_layers
from .pipeline import PEER, WORKLOADS, benchmark, compress, compressed_model, numbers, peer_model, report, row, timing
from .export import is_compressed, load_compressed, save_compressed, zip_bytes
from .jobs import queue as job_queue
from .store import applies, default_store, record_apply, storage_url
from .cache import policy as cache_policy

__all__ = [
    # the technique table and the recipe it generates
    "STEPS", "FIELDS", "refusal", "field_reason", "Recipe", "CompressError",
    # models
    "BUNDLED", "ModelBundle", "load_model",
    # uploads and architecture adapters
    "load_upload", "load_local", "local_root", "MAX_UPLOAD_BYTES", "MAX_PARAMS", "FAMILIES", "ADAPTERS", "conv1d_to_linear", "tied_embeddings",
    # techniques
    "block_influence", "choose_layers", "drop_layers", "Spectrum", "spectra", "has_spectra", "select_ranks", "layer_report",
    "LowRankLinear", "apply_factorize", "LowRankEmbedding", "factorize_embeddings", "apply_quantize",
    "LowBitEmbedding", "low_bit_embeddings", "HealResult", "heal_texts", "MAX_HEAL_BYTES",
    "layer_sensitivity", "allocate",
    # measurement and quality
    "size_bytes", "size_breakdown", "count_params", "latency", "BUSY", "machine_line", "cpu_info", "gpu_info", "quality", "search", "eval_set",
    "next_token_agreement", "complete", "workload", "WORKLOADS", "metric_label", "EVAL_SETS", "heal_corpus",
    "near_duplicates",
    # pipeline
    "compress", "compressed_model", "peer_model", "PEER", "job_queue", "default_store", "record_apply", "applies", "storage_url", "benchmark", "numbers", "row", "timing", "report", "save_compressed", "load_compressed", "is_compressed", "zip_bytes", "cache_policy",
]
