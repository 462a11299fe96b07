"""sentence-transformers' Pooling / Normalize settings in an uploaded folder (modules.json, 1_Pooling/config.json): the
evaluation's sentence embeddings are pooled as the folder says; hostile values are refused in one line."""
import json

import pytest
import torch

import compress as C
from compress.measure import evaluate
from compress.models.adapters import forward
from compress.models.staging import MAX_CONFIG_BYTES
from builders import _tokenizers, build_family
from test_uploads import make_zip, refused

pytestmark = pytest.mark.usefixtures("one_thread")
ST_MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
              {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
              {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def _pooling(mode="mean", **extra):
    modes = {f"pooling_mode_{m}": m == mode for m in ("cls_token", "mean_tokens", "max_tokens",
                                                       "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")}
    return json.dumps({"word_embedding_dimension": 32, **modes, "include_prompt": True, **extra})


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The files of a tiny MPNet upload with its tokenizer: {name: bytes}."""
    d = tmp_path_factory.mktemp("mpnet")
    build_family("mpnet", d, _tokenizers((evaluate.ASSETS / "heal" / "sentences.txt").read_text().splitlines()[:300]))
    return {f.name: f.read_bytes() for f in d.iterdir()}


def _st(good, pooling=None, modules=ST_MODULES):
    files = {**good, "modules.json": modules if isinstance(modules, str) else json.dumps(modules)}
    return {**files, "1_Pooling/config.json": pooling} if pooling is not None else files


@pytest.mark.parametrize("mode, how", [("cls_token", "cls"), ("mean_tokens", "mean"), ("max_tokens", "max")])
def test_the_embedding_is_pooled_as_the_folder_says(mode, how, good, tmp_path, tmpdirs):
    b = C.load_model(str(make_zip(tmp_path / "st.zip", _st(good, _pooling(mode)), folder="all-mpnet/")))
    assert b.info["pooling"] == how and b.info["normalize"] is True
    assert (f"{how}-pooled, as its 1_Pooling says" in C.quality_words(b)) == (how != "mean")  # the card and page say it
    texts = ["The city council met on Tuesday.", "A cat sat."]
    ids, mask = evaluate.batches(b, texts, 2)[0]
    with torch.no_grad():
        h = forward(b.model, b.adapter, ids, mask)
    want = {"cls": h[:, 0], "mean": evaluate.mean_pool(h, mask),
            "max": torch.stack([h[i, mask[i].bool()].amax(0) for i in range(2)])}[how]
    got = evaluate.embed(b, texts)
    torch.testing.assert_close(got, torch.nn.functional.normalize(want, dim=-1))
    others = [torch.nn.functional.normalize(v, dim=-1) for k, v in
              {"cls": h[:, 0], "mean": evaluate.mean_pool(h, mask)}.items() if k != how]
    assert all(not torch.allclose(got, o, atol=1e-3) for o in others)  # the mode made a difference


def test_without_the_files_it_is_mean_pooling(good, tmp_path, tmpdirs):
    b = C.load_model(str(make_zip(tmp_path / "plain.zip", good)))
    assert "pooling" not in b.info and "normalize" not in b.info
    only_modules = C.load_model(str(make_zip(tmp_path / "m.zip", _st(good, None, ST_MODULES[:2]))))
    assert only_modules.info["normalize"] is False and "pooling" not in only_modules.info
    dense = [*ST_MODULES, {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}]
    b = C.load_model(str(make_zip(tmp_path / "d.zip", _st(good, None, dense))))  # a projection this app does not run
    assert "its modules.json's Dense is not run here: the embeddings are taken before it" in C.quality_words(b)
    evil = [*ST_MODULES, {"type": "x.![t](http://2130706433/t)"}, {"type": "x.:red[**red**]\n\n# BIG"}]
    b = C.load_model(str(make_zip(tmp_path / "e.zip", _st(good, None, evil))))  # (shown in markdown on two pages)
    assert "its modules.json's thttp2130706433t, redredBIG is not run here" in C.quality_words(b)


@pytest.mark.parametrize("files, match", [
    (dict(pooling=_pooling("cls_token", pooling_mode_mean_tokens="yes")), "must be true or false"),
    (dict(pooling=_pooling("cls_token", pooling_mode_mean_tokens=True)), "turns on pooling_mode_cls_token, pooling_"),
    (dict(pooling=_pooling("weightedmean_tokens")), "turns on pooling_mode_weightedmean_tokens"),
    (dict(pooling=_pooling("none")), "turns on no mode"),
    (dict(pooling=_pooling("cls_token", word_embedding_dimension=768)), "word_embedding_dimension 768"),
    (dict(pooling="[1, 2]"), "must hold a JSON object"),
    (dict(pooling="{not json"), "not valid JSON"),
    (dict(pooling=" " * MAX_CONFIG_BYTES + "{}"), "bytes; a real one"),  # (sized before it is read)
    (dict(modules="{}"), "must hold a JSON list"),
    (dict(modules=[{"type": "x"}] * 17), "at most 16 modules"),
    (dict(modules=[{"type": 5}]), "each an object with a type name"),
])
def test_hostile_settings_are_refused_in_one_line(files, match, good, tmp_path, tmpdirs):
    path = make_zip(tmp_path / "bad.zip", _st(good, files.get("pooling", _pooling("cls_token")),
                                              files.get("modules", ST_MODULES)))
    msg = refused(path, match, tmpdirs)
    assert "\n" not in msg and len(msg) < 300
