"""compress: transformer compression trade-offs, measured. Never imports streamlit."""
from .errors import CompressError
from .table.steps import FIELDS, STEPS, refusal
from .table.reasons import field_reason
from .table.recipe import Recipe
from .models.bundle import ModelBundle
from .models.bundled import BUNDLED, load_model
from .models.uploads import FAMILIES, MAX_PARAMS, MAX_UPLOAD_BYTES, load_local, load_upload, local_root
from .models.limits import BIG_PARAMS, default_workload, max_params, max_upload_mb
from .models.weights import DTYPES
from .models.adapters import ADAPTERS, conv1d_to_linear, tied_embeddings
from .techniques.spectrum import Spectrum, has_spectra, layer_report, select_ranks, spectra
from .techniques.factorize import LowRankEmbedding, LowRankLinear, apply_factorize, factorize_embeddings
from .techniques.lowbit import LowBitEmbedding, low_bit_embeddings
from .techniques.pq import PQEmbedding, pq_embeddings
from .techniques.quantize import apply_quantize
from .measure.core import BUSY, count_params, cpu_info, gpu_info, latency, machine_line, size_breakdown, size_bytes
from .measure.evaluate import complete, eval_set, metric_label, next_token_agreement, quality, search, workload
from .measure.texts import EVAL_SETS, heal_corpus, near_duplicates
from .measure.verdict import farthest
from .measure.general import HEAL_TEXTS, general_corpus
from .techniques.heal import MAX_HEAL_BYTES, HealResult, heal_texts
from .techniques.healdev import read_heal_text
from .techniques.sensitivity import allocate, cached as layer_sensitivity
from .techniques.layers import block_influence, choose_layers, drop_layers
from .measure.measurement import Measurement, measure as measure_compression
from .measure.metrics import METRICS, has_shape, quality_words
from .table.pipeline import PEER, WORKLOADS, benchmark, compress, compressed_model, numbers, peer_model, report, row, timing
from .outputs.export import is_compressed, load_compressed, save_compressed, zip_bytes
from .serve.jobs import queue as job_queue
from .serve.store import applies, default_store, record_apply, storage_url
from .serve.cache import policy as cache_policy

__all__ = [
    # the technique table and the recipe it generates
    "STEPS", "FIELDS", "refusal", "field_reason", "Recipe", "CompressError",
    # models
    "BUNDLED", "ModelBundle", "load_model",
    # uploads and architecture adapters
    "load_upload", "load_local", "local_root", "MAX_UPLOAD_BYTES", "MAX_PARAMS", "max_upload_mb", "max_params", "BIG_PARAMS", "default_workload", "DTYPES", "FAMILIES", "ADAPTERS", "conv1d_to_linear", "tied_embeddings",
    # techniques
    "block_influence", "choose_layers", "drop_layers", "Spectrum", "spectra", "has_spectra", "select_ranks", "layer_report",
    "LowRankLinear", "apply_factorize", "LowRankEmbedding", "factorize_embeddings", "apply_quantize",
    "LowBitEmbedding", "low_bit_embeddings", "PQEmbedding", "pq_embeddings", "HealResult", "heal_texts",
    "MAX_HEAL_BYTES", "read_heal_text",
    "layer_sensitivity", "allocate",
    # measurement and quality
    "size_bytes", "size_breakdown", "count_params", "latency", "BUSY", "machine_line", "cpu_info", "gpu_info", "quality", "search", "eval_set",
    "farthest", "next_token_agreement", "complete", "workload", "WORKLOADS", "metric_label", "EVAL_SETS", "heal_corpus",
    "near_duplicates", "general_corpus", "HEAL_TEXTS",
    # pipeline
    "Measurement", "measure_compression", "METRICS", "quality_words",
    "compress", "compressed_model", "peer_model", "PEER", "job_queue", "default_store", "record_apply", "applies", "storage_url", "benchmark", "numbers", "row", "timing", "report", "save_compressed", "load_compressed", "is_compressed", "zip_bytes", "cache_policy",
]
