"""The URL is input anyone can craft: generated query strings through the URL -> Recipe parser (every field, wrong
types, NaN, out of range, unknown fields, huge strings), and a sample of them through every page of the app: each
gives a recipe or one clear line, never an exception."""
import random

import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from conftest import ROOT

NASTY = ["", " ", "nan", "NaN", "inf", "-inf", "-1", "0", "1", "2", "0.5", "1e308", "1e-308", "3.7", "true", "false",
         "yes", "None", "null", "[]", "[1,2]", "1,2,3", "2,,2", "((2))", "x" * 5000, "é", "\x00", "%00", "0x10",
         "9" * 400, "int8", "int4", "ratio", "budget", "compile", "gradient", "-0", "+1", "1_000", " 3 ", "2.0"]


def queries(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    names = list(C.FIELDS) + ["model", "rank_mod", "__class__", "x" * 300]
    out = []
    for i in range(n):
        q = {name: rng.choice(NASTY) for name in rng.sample(names, rng.randint(1, 6))}
        if i % 5 == 0:  # a valid value of a real field next to the nasty ones
            f = rng.choice(list(C.FIELDS.values()))
            q[f.name] = f.text(f.probe())
        if i % 8 == 4:  # a valid value alone, the fields in turn (so some URLs parse whatever the field count)
            f = list(C.FIELDS.values())[i // 8 % len(C.FIELDS)]
            q = {f.name: f.text(f.probe())}
        out.append(q)
    return out


def test_two_hundred_crafted_urls_give_a_recipe_or_one_clear_line():
    ok = refused = 0
    for q in queries(240):
        try:
            r = C.Recipe.from_params(q)
            ok += 1
            assert r is None or C.Recipe.from_params(r.to_params()) == r
        except C.CompressError as e:
            refused += 1
            assert str(e) and "\n" not in str(e) and len(str(e)) < 600
    assert ok > 10 and refused > 100  # both outcomes are exercised


@pytest.mark.parametrize("q", queries(30, seed=1), ids=lambda q: ",".join(sorted(q))[:60])
def test_crafted_urls_on_every_page(q, tiny_bert, monkeypatch):
    monkeypatch.setitem(C.BUNDLED, "tiny-bert", lambda: tiny_bert)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update({**q, "model": "tiny-bert"})
    at.run()
    for page in ("ui/pages/spectra.py", "ui/pages/compress.py", "ui/pages/model.py"):
        at.switch_page(page).run()
        assert not at.exception, f"{page}: {at.exception}"
