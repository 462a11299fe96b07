"""What a page shows or a download writes from an upload's strings (a hostile review's findings, fixed by class):
a tokenizer's tokens are bounded at load and cut and escaped where shown (a 1,000,000-character [UNK] made 266 MB of
page; a token holding <a href> was a live link on Learn), a compressed zip's card is checked once at load (a number of
400 digits broke the Compress page on every rerun, a markdown image in it was fetched by the viewer's browser), library
messages quoting an upload are plain text, CSV cells are never formulas, and a name cannot pose as a bundled model."""
import io
import json
import re

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from compress.learn import MAX_SHOWN
from compress.outputs import cardcheck
from conftest import ROOT
from test_export import _zip, bundled  # noqa: F401 - the fixture
from test_hostile_zips import weight_zips  # noqa: F401 - the fixture
from test_pages_hostile import check
from ui import safe

pytestmark = pytest.mark.usefixtures("one_thread")
EVIL = '<a href="http://evil.example/x">' + "y" * 3000 + "</a>![i](http://evil.example/t.png)"  # under 4,096 chars
TAG = re.compile(r"<\s*(a|img|span|script|b|i)\b", re.I)  # what plotly would render in a label


@pytest.fixture
def evil_bert(tiny_bert, monkeypatch):
    """tiny_bert's model with a WordPiece tokenizer whose [UNK] (every unknown word) is EVIL, as a bundled model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertTokenizerFast
    vocab = {t: i for i, t in enumerate(["[PAD]", EVIL, "[CLS]", "[SEP]", "[MASK]", "the", "a", "of", ".", ","])}
    wp = Tokenizer(models.WordPiece(vocab=vocab, unk_token=EVIL))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = BertTokenizerFast(tokenizer_object=wp, unk_token=EVIL, pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]")
    b = C.ModelBundle(tiny_bert.model, "evil-bert", tiny_bert.adapter, tok, "evil" * 16, dict(tiny_bert.info))
    monkeypatch.setitem(C.BUNDLED, "evil-bert", lambda: b)
    return b


def _strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


def test_an_uploads_tokens_are_cut_and_escaped_on_every_learn_figure(evil_bert):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["model"] = "evil-bert"
    at.run()
    at.switch_page("ui/pages/learn.py").run()
    check(at, "learn on evil tokens")  # no exception, nothing of evil.example rendered as markdown
    assert not [e.value for e in at.error if "Something went wrong" in e.value]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    labelled = [s for s in specs if any("evil.example" in t for t in _strings(s))]
    assert len(labelled) >= 3  # the vocabulary, static table and attention figures label the tokens
    for s in labelled:
        for t in _strings(s):
            assert not ("evil.example" in t and TAG.search(t)), t[:200]  # escaped: &lt;a href=...
            assert "y" * (MAX_SHOWN + 1) not in t  # cut to MAX_SHOWN characters
    for node in at.get("dataframe"):  # tables show tokens too: cut, not megabytes
        assert len(node.proto.SerializeToString()) < 200_000


def test_the_librarys_tokens_are_cut_to_MAX_SHOWN():
    from compress.learn import shown
    assert shown(["a" * 10, "b" * 5000]) == ["a" * 10, "b" * (MAX_SHOWN - 1) + "…"]


def test_a_refused_tokenizers_note_is_plain_text_on_the_model_page(evil_bert, monkeypatch):
    info = {**evil_bert.info, "note": "its tokenizer_config.json is refused: its tokenizer_class "
                                      "'![](http://evil.example/m.png)' is not a built-in tokenizer"}
    noted = C.ModelBundle(evil_bert.model, "noted", evil_bert.adapter, None, "n" * 64, info)
    monkeypatch.setitem(C.BUNDLED, "noted", lambda: noted)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["model"] = "noted"
    at.run()
    assert at.warning and "is refused" in at.warning[0].value
    check(at, "model page note")


def _card(weight_zips, **changes) -> bytes:
    return json.dumps({**json.loads(weight_zips["int8"]["card.json"]), **changes}).encode()


BAD_HISTORY = [{"step": "x", "dev": 0.1}, {"step": 10**300, "dev": 0.2}, {"step": 1, "dev": float("nan")},
               {"step": True, "dev": 0.3}, {"step": 2, "dev": "0.5"}, {"step": 3, "dev": 0.7, "note": "=HYPERLINK(1)"}]


def test_a_cards_numbers_and_healing_record_are_checked_at_load(bundled, weight_zips, tmp_path):
    heal = {"metric": "fidelity", "history": BAD_HISTORY, "steps_run": 3, "stopped": False, "machine": "x" * 500}
    files = {**weight_zips["int8"], "card.json": _card(weight_zips, size_bytes=10**400, params=True,
                                                       quality={"fidelity": 10**400, "ok": 0.9, "nan": float("nan")},
                                                       heal=heal)}
    c = C.load_compressed(_zip(tmp_path, files)).info["card"]
    assert "size_bytes" not in c and "params" not in c and c["quality"] == {"ok": 0.9}
    assert c["heal"]["history"] == [{"step": 3, "dev": 0.7}]  # the only point the app wrote's shape
    assert c["heal"]["stopped"] is False and "machine" not in c["heal"] and c["heal"]["steps_run"] == 3
    for metric in ("![x](http://evil.example/t.png)", 5, None):
        files["card.json"] = _card(weight_zips, heal={**heal, "metric": metric})
        assert "heal" not in C.load_compressed(_zip(tmp_path, files)).info["card"]
    assert cardcheck.number(10**15) and not cardcheck.number(10**16) and not cardcheck.number(float("inf"))


@pytest.mark.parametrize("history", [BAD_HISTORY + [{"step": 0, "dev": 0.5}],
                                     [{"step": 0, "dev": 0.5}, {"step": 1e300, "dev": 0.6}]],  # one point is left
                         ids=["points", "one point"])  # (as a run whose cap was spent before its first step has)
def test_a_hostile_card_uploaded_back_leaves_compress_and_learn_working(bundled, weight_zips, app, tmp_path, history):
    heal = {"metric": "fidelity", "history": history, "steps_run": 3, "best_step": 3, "seconds": 1e300,
            "dev_before": 0.5, "dev_after": 0.7}
    files = {**weight_zips["int8"], "card.json": _card(weight_zips, size_bytes=10**400, quality={"fidelity": 1e400},
                                                       heal=heal)}
    app.run()
    app.radio(key="model_source").set_value("Upload a zip").run()
    app.file_uploader(key="upload").upload("back.zip", _zip(tmp_path, files).read_bytes()).run()
    assert any("compressed model was uploaded" in s.value for s in app.sidebar.success)
    for page in ("ui/pages/compress.py", "ui/pages/learn.py"):
        app.switch_page(page).run()
        assert not app.exception and not [e.value for e in app.error if "Something went wrong" in e.value], page
        if page.endswith("compress.py"):  # the card's claims beside what is measured: its size was dropped at load
            assert any("card says no size" in i.value for i in app.info)


def test_csv_cells_are_never_formulas():
    cells = ["=HYPERLINK(1)", "+1", "-x", "@SUM(A1)", "\tx", "ok", None]
    t = pd.DataFrame({"=cmd": cells, "n": [-1, 2, 3, 4, 5, 6, 7]})
    got = pd.read_csv(io.BytesIO(safe.csv_bytes(t)))
    assert list(got.columns) == ["'=cmd", "n"] and got["n"].tolist() == [-1, 2, 3, 4, 5, 6, 7]
    assert all(v.startswith("'") for v in got["'=cmd"][:5]) and got["'=cmd"][5] == "ok"


def test_a_name_that_looks_like_a_bundled_models_is_marked_as_an_upload(tiny_bert):
    from ui import shell
    for name, shown_as in [("m\u0456nilm", "upload-m\u0456nilm"), ("MiniLM", "upload-MiniLM"),
                           ("minilm", "upload-minilm"), ("my-model.zip", "my-model.zip")]:
        assert shell._public(tiny_bert, name).name == shown_as
