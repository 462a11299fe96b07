"""AppTest of the Learn page: per model (a tiny BERT, a GPT-2 upload; MiniLM and tinygpt marked slow) the page opens
with at least 6 plotly charts and no exception, and every section's slider moves a number of its figure's data the way
the technique says (read back from the chart's layout.meta, which the page fills from the library)."""
import json

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT

APP = str(ROOT / "app.py")


def figures(at) -> dict:
    """figure name -> the numbers the page kept in its layout.meta."""
    out = {}
    for chart in at.get("plotly_chart"):
        meta = json.loads(chart.proto.spec)["layout"].get("meta") or {}
        if "figure" in meta:
            out[meta["figure"]] = meta
    return out


def move(at, kind, key, value) -> dict:
    getattr(at, kind)(key=key).set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]
    return figures(at)


def check_every_section(at, heads: int, blocks: int, healing: bool, encoder: bool = False, output: bool = True):
    at.switch_page("ui/pages/learn.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    charts = at.get("plotly_chart")
    assert len(charts) >= 6
    # low rank: the reconstruction error falls as the rank grows
    lo, hi = move(at, "slider", "learn_lr_rank", 0.1)["lowrank"], move(at, "slider", "learn_lr_rank", 0.6)["lowrank"]
    assert hi["rank"] > lo["rank"] and hi["error"] < lo["error"] and hi["energy"] > lo["energy"]
    # quantization: per-channel never worse than per-tensor; more bits, less error
    q4, q8 = move(at, "slider", "learn_q_bits", 4)["quantization"], move(at, "slider", "learn_q_bits", 8)["quantization"]
    assert q8["per-channel"] < q4["per-channel"] and q8["per-channel"] <= q8["per-tensor"]
    # heads: more heads kept, fewer removed; the layer slider changes the maps shown
    one = move(at, "slider", "learn_heads_keep", 1)["head_scores"]
    every = move(at, "slider", "learn_heads_keep", heads)["head_scores"]
    assert one["removed"] == blocks * (heads - 1) and every["removed"] == 0
    spec = next(json.loads(c.proto.spec)["layout"] for c in at.get("plotly_chart")
                if (json.loads(c.proto.spec)["layout"].get("meta") or {}).get("figure") == "head_scores")
    assert spec["yaxis"]["autorange"] == spec["yaxis2"]["autorange"] == "reversed"  # the two maps' rows line up
    assert move(at, "select_slider", "learn_heads_layer", blocks - 1)["head_maps"]["layer"] == blocks - 1
    # FFN: keeping more neurons keeps more of the importance
    f1, f2 = move(at, "slider", "learn_ffn_frac", 0.2)["ffn"], move(at, "slider", "learn_ffn_frac", 0.8)["ffn"]
    assert f2["kept"] > f1["kept"] and f2["mass_kept"] > f1["mass_kept"]
    # FNet: a higher frequency row crosses zero more often
    k1, k3 = move(at, "slider", "learn_fnet_k", 1)["fnet"], move(at, "slider", "learn_fnet_k", 3)["fnet"]
    assert k1["T"] >= 7 and k3["crossings"] > k1["crossings"]
    # fewer layers: keeping more blocks keeps less influential ones too
    l1, ln = move(at, "slider", "learn_layers_k", 1)["layers"], move(at, "slider", "learn_layers_k", blocks)["layers"]
    assert len(l1["kept"]) == 1 and ln["kept"] == list(range(blocks)) and ln["lowest_kept"] <= l1["lowest_kept"]
    # efficient attention: a wider window computes more of the grid, a higher rank errs less
    e1, e4 = move(at, "slider", "learn_eff_w", 1)["efficient"], move(at, "slider", "learn_eff_w", 4)["efficient"]
    assert e4["density_fixed"] > e1["density_fixed"] and e4["low_rank"] <= e1["low_rank"]
    # the library's variants on the layer: a window as long as the sentence is the original attention
    w1 = move(at, "slider", "learn_var_window", 1)["variants"]
    wt = move(at, "slider", "learn_var_window", at.slider(key="learn_var_window").max)["variants"]
    assert wt["local"] < 1e-5 < w1["local"] and w1["kernel"] == wt["kernel"] > 0
    # vocabulary (encoders): keeping more of the table keeps more of the sentence's tokens, a kept one reads itself
    if encoder:
        v1 = move(at, "slider", "learn_vocab_frac", 0.05)["vocabulary"]
        v2 = move(at, "slider", "learn_vocab_frac", 1.0)["vocabulary"]
        assert v2["kept"] > v1["kept"] and v1["cos_nearest"] < 0.99 < v2["cos_nearest"]
        assert "cos_output" not in v1  # the output cover runs every token through the model: only when asked
        vo = v2
        if output:  # (it runs every token of the vocabulary through the model: 15 s on MiniLM, the tiny BERT's here)
            vo = move(at, "toggle", "learn_vocab_output", True)["vocabulary"]
            assert vo["cos_output"] > 0.99 and vo["cos_nearest"] == v2["cos_nearest"]  # at 1.0 every token: itself
        ve = move(at, "radio", "learn_vocab_keep", "english")["vocabulary"]  # the rows kept by English too
        assert ve["keep_by"] == "english" and vo["keep_by"] == "text" and ve["kept"] == v2["kept"]  # at 1.0: all
        # static table: a smaller SIF a weighs frequent tokens less; the plain mean does not depend on it
        s1, s6 = move(at, "select_slider", "learn_static_a", 1e-2)["static"], \
            move(at, "select_slider", "learn_static_a", 1e-6)["static"]
        assert s6["lightest"] < s1["lightest"] <= 1 and s1["plain"] == s6["plain"]
        assert abs(s1["cosine"] - s1["plain"]) < abs(s6["cosine"] - s6["plain"]) + 1e-6
        # attention relations: each row a distribution over the keys; another relation, another map
        rq = move(at, "slider", "learn_rel_head", 1)["relations"]
        rv = move(at, "radio", "learn_rel_kind", "v")["relations"]
        assert rq["head"] == 1 and rv["kind"] == "v" and rq["rowsum"] == pytest.approx(1, abs=1e-4)
        assert rq["entropy"] != rv["entropy"]
        # healing: kept block i learns the original block Fewer layers kept in its place
        for k in (1, blocks):
            at.slider(key="learn_heal_blocks").set_value(k).run()
            table = next(d.value for d in at.dataframe if "learns original block" in d.value.columns)
            assert list(table["kept block"]) == list(range(k)) and len(set(table["learns original block"])) == k
        assert list(table["learns original block"]) == list(range(blocks))  # every block kept: each its own
        # token pooling: every 4 tokens leaves fewer slots and fewer query-key pairs than every 2
        p2, p4 = move(at, "select_slider", "learn_pool_f", 2)["pooling"], \
            move(at, "select_slider", "learn_pool_f", 4)["pooling"]
        assert p2["slots"] == -(-p2["tokens"] // 2) and p4["slots"] == -(-p4["tokens"] // 4)
        assert p4["pairs"] < p2["pairs"] < p2["full"] == p2["tokens"] ** 2 * blocks
    else:
        assert not {"vocabulary", "static", "relations", "pooling"} & set(figures(at))
    # healing: the best state kept only gets better as more steps are shown
    if healing:
        h = figures(at)["healing"]
        early = move(at, "slider", "learn_heal_steps", 20)["healing"]
        assert early["step"] < h["step"] and (h["best"] >= early["best"] if h["higher"] else h["best"] <= early["best"])
    else:
        assert "healing" not in figures(at)
    return at


def test_learn_page_on_a_tiny_bert(app):
    app.run()
    at = check_every_section(app, heads=4, blocks=2, healing=False, encoder=True)
    assert any("heal a recipe" in i.value for i in at.info)
    at.button(key="learn_art_measure").click().run()  # the article's rows measured: the button goes, the table fills
    assert not at.exception and not [b for b in at.button if b.key == "learn_art_measure"]
    table = next(d.value for d in at.dataframe if "in plain words" in d.value.columns)
    assert "not measured yet" not in set(table["in plain words"])
    at.button(key="learn_lr_open").click().run()  # open in Compress: the recipe is set in the widgets
    assert not at.exception
    assert at.session_state["r_rank_mode"] == "ratio" and at.session_state["r_rank"] == pytest.approx(0.6)


def test_learn_page_on_a_gpt2_upload(tmp_path, monkeypatch):
    """A GPT-2 zip loaded by the upload loader (fused c_attn, tied table, a BPE tokenizer trained on our sentences),
    registered as a model the sidebar can pick."""
    import compress as C
    from builders import _tokenizers, build_family, zip_dir
    from compress.measure.texts import eval_set
    folder = tmp_path / "gpt2"
    folder.mkdir()
    build_family("gpt2", folder, _tokenizers(eval_set("project")[0]))
    upload = C.load_upload(zip_dir(folder, tmp_path / "gpt2.zip"))
    monkeypatch.setitem(C.BUNDLED, "gpt2-upload", lambda: upload)
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["model"] = "gpt2-upload"
    at.run()
    at = check_every_section(at, heads=4, blocks=2, healing=False)
    assert "gpt2.zip** (GPT2, generation)" in at.sidebar.caption[-1].value
    assert any("FNet mixes in future tokens" in c.value for c in at.caption)  # its FNet button says why not
    assert "lowrank" not in at.selectbox(key="learn_var_pick").options  # Linformer refused on a decoder
    at.selectbox(key="learn_var_pick").set_value("local").run()
    at.button(key="learn_var_open").click().run()  # the variant drawn, on the Compress page and in its link
    assert not at.exception and at.session_state["r_attention"] == "local"
    assert at.query_params["attention"] in ("local", ["local"])


def test_compress_captions_link_to_their_learn_section(app):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    links = [(p.proto.label, p.proto.page) for p in app.get("page_link")]
    assert len(links) >= 10 and all("learn" in page for _, page in links)
    assert any(label.endswith("Learn, Low rank") for label, _ in links)
    assert sum(label.endswith("Learn, Efficient attention") for label, _ in links) == 2  # attention, token pooling


@pytest.mark.slow
@pytest.mark.parametrize("model,heads,blocks", [("minilm", 12, 6), ("tinygpt", 4, 4)])
def test_learn_page_on_a_bundled_model(model, heads, blocks):
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params["model"] = model
    at.run()
    at = check_every_section(at, heads=heads, blocks=blocks, healing=True, encoder=model == "minilm", output=False)
    pooler = [c.value for c in at.caption if "keeps a pooler" in c.value]  # MiniLM's, which no output reads
    assert pooler == (["Beside the blocks, minilm keeps a pooler (147,840 weights, 0.59 MB) from its pre-training: "
                       "sentence embeddings are the mean of the last hidden states and never read it, so **Drop the "
                       "unused pooler** removes it with no change to any output."] if model == "minilm" else [])
    table = [c.value for c in at.caption if "learned position table" in c.value]  # (tinygpt's is its own config)
    assert table == (["minilm also keeps a learned position table: 512 rows (0.79 MB), one for each position a text "
                      "may reach. **Positions kept** keeps its first N: a text of up to N tokens reads exactly the "
                      "same, a longer one is cut to N."] if model == "minilm" else [])
