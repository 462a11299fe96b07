import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "COMPRESS_DATA" not in os.environ:  # the results store, not the repo's; made by the first process (xdist's
    os.environ["COMPRESS_DATA"] = tempfile.mkdtemp(prefix="compress-data-")  # workers inherit it), removed by it
    atexit.register(shutil.rmtree, os.environ["COMPRESS_DATA"], True)  # at its exit (every run left one in /tmp)
if os.environ.get("PYTEST_XDIST_WORKER"):  # make test: two worker processes on 2 cores, one torch thread each;
    torch.set_num_threads(1)                # the other worker always overlaps a timing: no round is timed again
    os.environ.setdefault("COMPRESS_RETIME", "0")  # (the CLI and app servers the tests start inherit it)

import compress as C  # noqa: E402
from compress.models.adapters import ADAPTERS  # noqa: E402
from compress.models.bundle import ModelBundle  # noqa: E402


# Files that drive whole pages, sweeps, CLI runs, the browser or real models (seconds to minutes a test): slow as a
# whole, so that make test-fast (-m "not slow and not heavy": the library's unit tests) stays under a minute.
SLOW_FILES = {"test_app", "test_app_robust", "test_browser", "test_browser_learn", "test_browser_nav",
              "test_browser_sweep", "test_browser_upload", "test_cancel", "test_export", "test_guide_page", "test_hostile_zips",
              "test_learn", "test_learn_page", "test_measurement", "test_pages_hostile", "test_pages_safe",
              "test_peers", "test_pipeline", "test_quality", "test_quantize", "test_static", "test_sweep",
              "test_sweep_limits", "test_sweep_workers", "test_takeaway", "test_tinygpt", "test_tradeoffs_page",
              "test_url_fuzz", "test_app_families"}


# The files of 10 s or more, longest first (seconds of make test on the 2-core AMD EPYC, 2026-12-06: test_table 203,
# test_browser_nav 128, test_learn_page 106, test_browser 101 ... test_hostile_display 11). make test hands whole files
# to its two workers in collection order (--no-loadscope-reorder: xdist would put the files of most tests first, and
# the one-test browser files then all ran last, on one worker while the other was idle); longest first, they end
# within seconds of each other (a simulation of xdist's hand-out on these seconds: 672 s against 728).
LONGEST = ["test_table", "test_browser_nav", "test_learn_page", "test_browser", "test_browser_sweep",
           "test_tradeoffs_page", "test_metrics", "test_sweep_workers", "test_pages_hostile", "test_export",
           "test_ortrun", "test_pipeline", "test_browser_cancel", "test_app", "test_odd_shapes", "test_vocab",
           "test_pq", "test_tinygpt", "test_sweep", "test_runtime", "test_browser_upload", "test_quantize",
           "test_measurement", "test_cancel", "test_hostile_zips", "test_app_links", "test_app_families",
           "test_hostile_display"]


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.stem in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST)}  # then the other slow files, then the rest (a stable sort)
    items.sort(key=lambda i: (rank.get(i.path.stem, len(rank)), i.path.stem not in SLOW_FILES))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: seconds or more a test (real models, pages, sweeps, the browser); "
                            "make test runs them, make test-fast does not")
    config.addinivalue_line("markers", "heavy: end-to-end cases a cheaper test covers: make test-slow only")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core box: one torch thread ran these tests ~10x faster than two under load."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def minilm():
    return C.load_model("minilm")


@pytest.fixture(scope="session")
def tiny_bert(minilm):
    """A random 2-layer BERT with MiniLM's tokenizer: every technique, in a fraction of a second."""
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=minilm.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=128)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    info = {"architecture": "Bert", "model_type": "bert", "layers": 2, "heads": 4, "hidden": 64,
            "vocab_size": cfg.vocab_size, "max_positions": 128, "source": "test"}
    return ModelBundle(model, "tiny-bert", ADAPTERS["bert"], minilm.tokenizer, "tiny-bert-hash", info)


def make_tiny_gpt(name: str = "tiny-gpt", heads: int = 2, width: int = 32) -> ModelBundle:
    """A random 2-layer TinyGPT with weights large enough that its next-token distributions are not flat."""
    from compress.models.tinygpt import ByteTokenizer, GPTConfig, TinyGPT
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(block_size=64, n_layer=2, n_head=heads, n_embd=width, dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    info = {"architecture": "TinyGPT", "model_type": "tinygpt", "layers": 2, "heads": heads, "hidden": width,
            "vocab_size": 256, "max_positions": 64, "source": "test"}
    return ModelBundle(model, name, ADAPTERS["tinygpt"], ByteTokenizer(), f"{name}-hash", info)


@pytest.fixture(scope="session")
def tiny_gpt():
    return make_tiny_gpt()


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory):
    """A random 2-block Qwen2 (the Llama family: 4 query heads over 2 key/value heads, SwiGLU, rotary, q/k/v biases,
    an untied head) with a byte-level BPE, loaded through the upload path."""
    from builders import _tokenizers, build_family
    from compress.measure import evaluate
    d = tmp_path_factory.mktemp("qwen2")
    build_family("qwen2", d, _tokenizers((evaluate.ASSETS / "heal" / "sentences.txt").read_text().splitlines()[:600]))
    return C.load_upload(d)


def as_bundled(monkeypatch, bundles: dict):
    """Yield `bundles` ({name: ModelBundle}) registered as bundled originals (load_compressed finds one by name)."""
    for name, b in bundles.items():
        monkeypatch.setitem(C.BUNDLED, name, lambda b=b: b)
    C.load_model.cache_clear()
    yield bundles
    C.load_model.cache_clear()


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The files of a valid tiny BERT upload: {name: bytes}."""
    from builders import build_family
    d = tmp_path_factory.mktemp("good")
    build_family("bert", d)
    return {f.name: f.read_bytes() for f in d.iterdir()}


@pytest.fixture
def tmpdirs(tmp_path, monkeypatch):
    """Every mkdtemp of the loader lands here, so a test can see that nothing was left behind."""
    d = tmp_path / "mkdtemp"
    d.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(d))
    return d


@pytest.fixture
def app(tiny_bert, monkeypatch):
    """A new app session (AppTest) on a tiny random BERT registered as a bundled model."""
    from streamlit.testing.v1 import AppTest
    monkeypatch.setitem(C.BUNDLED, "tiny-bert", lambda: tiny_bert)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["model"] = "tiny-bert"
    return at


def wait_healthy(url: str, seconds: float = 60) -> bool:
    """Poll a streamlit server's health endpoint until it answers ok (True) or `seconds` pass (False)."""
    import time
    import urllib.request
    for _ in range(int(seconds * 2)):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _tiny_encoder(family, tmp_path_factory):
    """A random 2-block encoder of the family, hidden 64 and 4 heads, with a byte-level BPE, loaded through the
    upload path (tests/encoder_models.py)."""
    from encoder_models import perturbed, tiny_encoder
    from builders import _tokenizers
    from compress.measure import evaluate
    d = tmp_path_factory.mktemp(family)
    bpe = _tokenizers((evaluate.ASSETS / "heal" / "sentences.txt").read_text().splitlines()[:600])[1]
    model, tok = tiny_encoder(family, bpe, hidden=64)
    perturbed(model).save_pretrained(d)
    tok.save_pretrained(d)
    return C.load_upload(d)


@pytest.fixture(scope="session")
def tiny_mpnet(tmp_path_factory):
    """MPNet: BERT's layout plus one relative position bias shared by every block."""
    return _tiny_encoder("mpnet", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_modernbert(tmp_path_factory):
    """ModernBERT: fused Wqkv, GeGLU (its Wi split at load), rotary, block 0 global and block 1 local (window 4)."""
    return _tiny_encoder("modernbert", tmp_path_factory)
