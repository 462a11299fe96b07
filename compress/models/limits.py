"""An upload's limits, one per resource, each set by one environment variable read when it is checked (the server's
operator sets it once; the library, the CLI and the app's uploader all follow it):

- COMPRESS_MAX_PARAMS: parameters a model may declare (config) or hold (weights), default 1.5 billion;
- COMPRESS_MAX_UPLOAD_MB: MB (2**20 bytes) of the zip and of the files used from it, default 3,200. The app sets
  Streamlit's server.maxUploadSize and the sidebar uploader's max_upload_size to it (ui/shell.py), so the server never
  takes a body the library would refuse, nor refuses one it would take.

The defaults take GPT-2 small (124M, 548 MB of float32), bert-base, all-mpnet-base-v2 and Llama 3.2 1B in bf16
(1.24B, 2.47 GB). Memory is bounded apart, per job (serve/membound.py): a load is refused before it allocates when
params x bytes per weight x membound.FACTOR["load"] is over the budget."""
from ..serve.settings import number

PARAMS_VAR, UPLOAD_VAR = "COMPRESS_MAX_PARAMS", "COMPRESS_MAX_UPLOAD_MB"
DEFAULT_PARAMS = 1_500_000_000
DEFAULT_UPLOAD_MB = 3_200  # .streamlit/config.toml's maxUploadSize says the same (a test checks)
BIG_PARAMS = 300_000_000  # above this, the app's default latency workload is one sequence, not a batch of 8


def max_params() -> int:
    """Parameters an upload may have: COMPRESS_MAX_PARAMS, else 1.5 billion."""
    return number(PARAMS_VAR, DEFAULT_PARAMS, whole=True)


def max_upload_mb() -> int:
    """MB an upload may take, zipped and unzipped: COMPRESS_MAX_UPLOAD_MB, else 3,200."""
    return number(UPLOAD_VAR, DEFAULT_UPLOAD_MB, whole=True)


def max_upload_bytes() -> int:
    return max_upload_mb() * 2**20


def params_words(n: int) -> str:
    return f"{n / 1e9:,.2f}B" if n >= 1e9 else f"{n / 1e6:,.0f}M" if n >= 1e6 else f"{n:,}"


BIG_NOTE = ("over {big} parameters: the default latency workload is batch 1, not 8 (a 1B model's batch of 8 x 128 "
            "takes seconds a forward on a few CPU cores, and an Apply times dozens)")


def default_workload(params: int, w: dict) -> tuple[dict, str]:
    """(an ids workload as offered by default for a model of `params` parameters, why it was made smaller or "")."""
    if params <= BIG_PARAMS or w.get("kind") == "sentences":
        return dict(w), ""
    return {**w, "batch": 1}, BIG_NOTE.format(big=params_words(BIG_PARAMS))
