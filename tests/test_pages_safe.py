"""The pages' boundary (ui/safe.py) and the bounds behind it (issue 24): link text shown plain, upload names the disk
takes, an unexpected exception as one line and a log entry, the values box and the recipe's text field bounded, the
store named without its folder, and Learn's CSVs built only when clicked."""
import json
import logging
import re

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from compress.sweep import space as S
from compress.serve import store
from conftest import ROOT
from ui import safe

APP = str(ROOT / "app.py")


@pytest.mark.parametrize("text", ["![x](http://evil.example/a.png)", "[a](javascript:alert(1))", "<script>x</script>",
                                  ":red[x] $x$ **b** `c` # h", "a\n\n- b\n> c", "\\![x](y)",
                                  "go to https://evil.example", "www.evil.example/x", "WWW.evil.example",
                                  "mail me@evil.example"])
def test_plain_leaves_no_markdown_construct(text):
    out = safe.plain(text)
    unescaped = re.sub(r"\\[!-/:-@\[-`{-~]", "", out)  # what is left once every escaped character is taken out
    assert "\n" not in out and not set(unescaped) & set("![]()<>:*`#$\\"), (text, out)
    shown = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", out)  # the text as markdown shows it: no bare address to autolink
    assert not re.search(r"(?i)://|www\.|@\w", shown) and shown.replace("\u2060", "") == " ".join(text.split())


@pytest.mark.parametrize("raw", ["x" * 300 + ".zip", "a\x00b.zip", "../../etc/passwd", "/tmp/x/y.zip", "日本" * 200,
                                 "🙂" * 100 + ".zip", "", "..", "C:\\a\\b.zip", "![x](http://e/).zip", "a\nb.zip",
                                 "__pwn__.zip", "_x_ y.zip", "a__b__c.zip", "my_model_v2.zip", "www.evil-login.com.zip",
                                 "WWW.x.zip", "1. model.zip"])
def test_upload_names_fit_the_disk_and_the_page(raw, tmp_path):
    name = safe.file_name(raw)
    assert name and len(name.encode()) < 255 and "/" not in name and "\x00" not in name and "\n" not in name
    assert not set(name) & set("![]()<>`*:\\")
    assert not re.search(r"_(?![^\W_])|(?<![^\W_])_", name), name  # "_" only inside a word: never emphasis
    assert not re.search(r"(?i)www\.|^\d+\. ", name), name  # Streamlit's markdown links www., starts a list at "1. "
    assert name == raw or raw != "my_model_v2.zip"  # snake_case names stay as they are
    (tmp_path / name).write_bytes(b"ok")  # the disk takes it (a 300-byte name raised here)
    if raw.endswith(".zip") and len(raw) > 100:
        assert name.endswith(".zip")


def test_a_values_box_is_bounded_before_it_is_counted():
    for spec in ("0:1e308:1e-308", "1e-308:1e308:1", "0:1:1e-4", ",".join(["0.5"] * 2000)):
        with pytest.raises(C.CompressError, match="at most|more than"):
            S.values("rank", spec)
    assert S.values("rank", "0.1:0.3:0.1") == (0.1, 0.2, 0.3)


def test_a_link_cannot_put_text_or_megabytes_in_a_recipe():
    for q in ({"heal_corpus": "![x](http://evil.example/)"}, {"heal_corpus": "a" * 65},
              {"heads": ",".join(["1"] * 300)}):
        with pytest.raises(C.CompressError):
            C.Recipe.from_params(q)
    assert C.Recipe.from_params({"heal_corpus": "ab" * 32}).heal_corpus == "ab" * 32


def test_the_store_is_named_without_the_servers_folder():
    assert store.shown("sqlite:////srv/secret/data/results.sqlite") == "sqlite:///.../results.sqlite"
    assert "pw" not in store.shown("postgresql+psycopg2://u:pw@db:5432/x")


def _session(page: str, model: str = "tinygpt") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["model"] = model
    at.run()
    if page != "ui/pages/model.py":
        at.switch_page(page).run()
    return at


def test_an_unexpected_exception_is_one_line_and_a_log_entry(monkeypatch, caplog):
    """Through app.py's boundary (the first run), the legacy path's (a page as the main script) and a fragment's."""
    def boom(*a, **k):
        raise RuntimeError("/srv/secret path in the message")
    monkeypatch.setattr(C, "cpu_info", boom)  # the Model page's last line
    with caplog.at_level(logging.ERROR, logger="compress.app"):
        at = _session("ui/pages/model.py")
        assert not at.exception and [e for e in at.error if "Something went wrong in the Model page" in e.value]
        assert at.metric  # what ran before the failure is still drawn
        at.switch_page("ui/pages/spectra.py").run()
        at.switch_page("ui/pages/model.py").run()  # a page run as the main script (AppTest's switch_page)
        assert not at.exception and [e for e in at.error if "Something went wrong in" in e.value], (at.error, at.main)
    assert "RuntimeError" in caplog.text and "/srv/secret" not in " ".join(e.value for e in at.error)
    monkeypatch.setattr("compress.learn.figures.layers_kept", boom)
    at.switch_page("ui/pages/learn.py").run()
    assert not at.exception and [e for e in at.error if "the Learn figure layers" in e.value]
    assert len(at.get("plotly_chart")) >= 6  # the other figures are drawn


def test_learns_csvs_are_built_only_when_clicked(monkeypatch):
    """No DataFrame.to_csv during any run of the Learn page (a layer's 2.1M-row CSV was built on every run)."""
    made = []
    real = pd.DataFrame.to_csv
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, *a, **k: made.append(len(self)) or real(self, *a, **k))
    at = _session("ui/pages/learn.py")
    at.slider(key="learn_ffn_frac").set_value(0.2).run()
    assert not at.exception and len(at.get("download_button")) >= 8 and made == []


def test_a_wide_layers_maps_are_shown_a_page_of_heads_at_a_time(monkeypatch):
    """Above MAX_PER_PAGE heads the figure shows a page of them, chosen in a box; its CSV holds that page only."""
    monkeypatch.setattr("ui.learn_attention.MAX_PER_PAGE", 3)
    at = _session("ui/pages/learn.py")  # tinygpt: 4 heads a layer
    box = at.selectbox(key="learn_heads_page")
    assert box.options == ["0-2 of 4", "3-3 of 4"]
    box.set_value(3).run()
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    maps = [f for f in specs if f["layout"].get("meta", {}).get("figure") == "head_maps"]
    assert not at.exception and len(maps) == 1 and len(maps[0]["layout"]["meta"]["entropy"]) == 1
    assert len(maps[0]["data"]) == 1 and "heads 3-3 over" in maps[0]["layout"]["title"]["text"]
    csv = next(d for d in at.get("download_button") if d.proto.id.endswith("learn_heads_csv"))
    t = int(maps[0]["layout"]["title"]["text"].split(" over ")[1].split()[0])
    assert csv.proto.label == f"Download the data (CSV, {t * t:,} rows)"  # one head's map: that page's only


def test_every_text_box_has_max_chars():
    """A text box without max_chars took a 5 MB prompt (held the queue 38 s and went into the report)."""
    import ast
    boxes = [(f.name, call.lineno) for f in [*(ROOT / "ui").rglob("*.py"), ROOT / "app.py"]
             for call in ast.walk(ast.parse(f.read_text())) if isinstance(call, ast.Call)
             and getattr(call.func, "attr", "") in ("text_input", "text_area")
             and not any(k.arg == "max_chars" for k in call.keywords)]
    assert not boxes


def test_plain_drops_control_and_format_characters_and_cuts_a_long_text():
    """A zip entry's name of 20,000 characters holding a right-to-left override was quoted whole in a message."""
    out = safe.plain("evil\u202egpj.exe\x07 name " + "n" * 20_000)
    assert "\u202e" not in out and "\x07" not in out and out.startswith("evilgpj\\.exe name nnn")
    assert len(out) <= safe.MAX_SHOWN + 10 and out.endswith("\u2026")
