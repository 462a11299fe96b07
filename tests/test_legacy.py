"""Nothing is lost across issue 26's move: what main wrote before it (tests/fixtures/legacy/, made by make_legacy.py
at e540173) opens with today's code: the public API's names, old /compress links, recipe.json files (missing fields
take their defaults), a downloaded compressed zip, and a results store with a study, an Apply and a job row."""
import json
import shutil
from urllib.parse import parse_qsl, urlsplit

import pytest
import torch

import compress as C
from conftest import ROOT

LEGACY = ROOT / "tests" / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


def test_public_api_keeps_every_name_and_kind():
    old = json.loads((LEGACY / "public_api.json").read_text())
    now = {n: type(getattr(C, n, None)).__name__ for n in old}
    assert now == old and set(old) <= set(C.__all__)
    assert C.report.__module__ == "compress.table.pipeline"  # the function, not the outputs wing


def test_old_compress_links_give_their_recipes():
    links = json.loads((LEGACY / "links.json").read_text())
    assert len(links) == 3
    for link, stored in links.items():
        params = dict(parse_qsl(urlsplit(link).query))
        # (fields added since, e.g. issue 28's attention, take their defaults: the stored dict lacks them)
        assert urlsplit(link).path == "/compress" and C.Recipe.from_params(params) == C.Recipe.from_dict(stored)


def test_old_recipe_files_open_and_missing_fields_take_defaults():
    mini = C.Recipe.from_json((LEGACY / "recipe_minilm.json").read_text())
    assert mini == C.Recipe.from_dict(EXPECTED["mini"])
    partial = C.Recipe.from_json((LEGACY / "recipe_partial.json").read_text())
    assert (partial.layers, partial.quant) == (2, "int8")
    assert partial == C.Recipe(layers=2, quant="int8")  # every other field: its default


def test_old_download_zip_loads_and_runs():
    bundle = C.load_compressed(LEGACY / "tinygpt_int8.zip")
    assert bundle.recipe == C.Recipe.from_dict(EXPECTED["recipe"])
    assert C.size_bytes(bundle.model) == EXPECTED["zip_bytes"]
    ids = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        out = bundle.model(ids)
    logits = out if torch.is_tensor(out) else out[0]
    assert logits.shape[:2] == (1, 16) and torch.isfinite(logits).all()


@pytest.fixture
def old_store(tmp_path, monkeypatch):
    shutil.copy(LEGACY / "results.sqlite", tmp_path / "results.sqlite")
    monkeypatch.setenv("COMPRESS_DATA", str(tmp_path))
    monkeypatch.delenv("COMPRESS_STORAGE", raising=False)
    return tmp_path / "results.sqlite"


def test_old_results_store_opens_with_its_study_apply_and_job(old_store):
    from compress.serve.store import default_store
    from compress.sweep import frontier, run, studies
    before = old_store.read_bytes()
    assert EXPECTED["study"] in studies.names("tinygpt")
    study = run.open_study(None, EXPECTED["study"])
    rows = frontier.rows(study)
    assert len(rows) == EXPECTED["summary"]["target"] and all(r["size_mb"] > 0 for r in rows)
    got = C.applies(session="legacy-session")
    assert len(got) == 1 and got[0]["model"] == "tinygpt"
    assert json.loads(got[0]["recipe_json"]) == EXPECTED["recipe"]
    jobs = default_store().recent(owner="legacy-session")
    assert [(j["kind"], j["state"]) for j in jobs] == [("apply", "done")]
    assert old_store.stat().st_size >= len(before)  # opened in place, nothing dropped
