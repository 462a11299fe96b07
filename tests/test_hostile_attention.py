"""A config's declared positions are not a bound on what an attention variant may allocate (a fifth hostile review:
a 50K-parameter Llama declaring 2^31 - 1 positions took kernel attention with m = 65,536 features; its Apply ran
414 s and the server's memory peaked at 17 GB). An upload's positions are used up to MAX_POSITIONS; Performer's
features and Reformer's buckets have their own ceiling; Apply's memory check counts the variant's activations at
the largest workload, so a window, a rank or a feature count that would not fit is refused in one line before
anything is built."""
import json

import pytest

import compress as C
from compress.models import uploads
from compress.techniques import attention
from test_uploads import make_zip

pytestmark = pytest.mark.usefixtures("one_thread", "tmpdirs")


@pytest.fixture
def huge_positions(tmp_path):
    """The Llama-family upload with max_position_embeddings = 2^31 - 1 (rotary: no table of that size exists)."""
    from builders import _tokenizers, build_family
    from compress.measure import evaluate
    build_family("llama", tmp_path / "m", _tokenizers((evaluate.ASSETS / "heal" / "sentences.txt").read_text()
                                                      .splitlines()[:600]))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["max_position_embeddings"] = 2**31 - 1
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    return C.load_model(str(make_zip(tmp_path / "m.zip", {f.name: f.read_bytes() for f in (tmp_path / "m").iterdir()})))


def test_an_uploads_positions_are_used_up_to_the_bound(huge_positions):
    assert huge_positions.info["max_positions"] == uploads.MAX_POSITIONS


def test_features_and_buckets_have_a_ceiling_whatever_the_positions(huge_positions):
    b = huge_positions
    b.info["max_positions"] = 2**31 - 1  # as if the bound above were gone: the variants' own ceilings still hold
    why = C.refusal(b, C.Recipe(attention="kernel", features=65536))
    assert why == f"m = 65536 random features per head; at most {attention.MAX_FEATURES} here (Performer's: 64 to 256)"
    assert C.refusal(b, C.Recipe(attention="kernel", features=attention.MAX_FEATURES)) is None
    encoder = C.load_model("minilm")
    assert "n from 1 to 512" in C.refusal(encoder, C.Recipe(attention="lsh", buckets=4096))


def test_a_variant_whose_activations_do_not_fit_is_refused_before_it_runs(huge_positions, monkeypatch):
    """Apply's measurement and healing check the variant's activations over their tokens before a forward runs."""
    b = huge_positions
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", "2000")
    wide = C.Recipe(attention="local", window=8192)  # 3 x 8,192 keys a query, 4 heads: 1.6 MB a token
    assert attention.mb_per_token(b.info, wide) * 16384 > 20_000
    comp = C.compress(b, wide)  # (a mask's settings: nothing of that size is built)
    for run in (lambda: C.measure_compression(b, comp, "ids", 64, 256),  # 16,384 tokens
                lambda: C.measure_compression(b, comp, "ids", 8, 32),  # the quality sets' batches: 8,192 tokens
                lambda: C.compress(b, C.Recipe(attention="local", window=8192, heal_steps=1))):  # healing's 4,096
        with pytest.raises(C.CompressError, match=r"needs about [\d,]+ MB \(.* of activations\).*nothing was started"):
            run()
    small = C.Recipe(attention="local", window=8)  # the same variant at a window that fits: built, measured
    assert attention.mb_per_token(b.info, small) * 16384 < 100
    m = C.measure_compression(b, C.compress(b, small), "ids", 8, 32, timed=False)
    assert m.compressed.quality
    assert attention.mb_per_token(b.info, C.Recipe()) == 0  # full attention: the weights' share already counts it
