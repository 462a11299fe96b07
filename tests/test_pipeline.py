import json
import subprocess
import sys

import pytest
import torch

import compress as C
from compress.models.adapters import forward
from conftest import ROOT


def _out(bundle, ids):
    with torch.no_grad():
        return forward(bundle.model, bundle.adapter, ids, torch.ones_like(ids))


def test_compress_never_mutates_the_original(tiny_bert):
    before = {k: v.clone() for k, v in tiny_bert.model.state_dict().items()}
    c = C.compress(tiny_bert, C.Recipe(rank_mode="ratio", rank=0.25, quant="int8"))
    after = tiny_bert.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert c.model is not tiny_bert.model and c.recipe.quant == "int8" and tiny_bert.recipe is None
    with pytest.raises(C.CompressError, match="original model"):
        C.compress(c, C.Recipe())


@pytest.mark.parametrize("recipe", [C.Recipe(rank_mode="energy", rank=0.8, quant="int8"),
                                    C.Recipe(rank_mode="budget", rank=0.5, quant="bf16"),
                                    C.Recipe(rank_mode="ratio", rank=0.3),
                                    C.Recipe(heads=[1, 3], ffn=0.5, rank_mode="ratio", rank=0.5, quant="int8",
                                             runtime="freeze"),
                                    C.Recipe(fnet=True, head_score="gradient", ffn=0.25),
                                    C.Recipe(emb_bits=2, heads=2, quant="int8", runtime="freeze"),
                                    C.Recipe(layers=1, ffn=0.5, emb_bits=4, quant="int8")])
def test_save_and_reload_round_trip(tiny_bert, monkeypatch, tmp_path, recipe):
    monkeypatch.setitem(C.BUNDLED, "tiny-bert", lambda: tiny_bert)
    C.load_model.cache_clear()
    c = C.compress(tiny_bert, recipe)
    C.save_compressed(c, tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"recipe.json", "card.json", "weights.safetensors",
                                                            "README.md", "tokenizer"}
    back = C.load_compressed(tmp_path / "m")
    assert back.recipe == recipe and back.layers == c.layers
    assert C.numbers(back)["size_bytes"] == C.numbers(c)["size_bytes"]
    assert back.applied.get("kept_blocks") == c.applied.get("kept_blocks")
    ids = torch.randint(1000, 2000, (3, 9))
    assert torch.equal(_out(back, ids), _out(c, ids))


def test_reload_refuses_a_different_base(tiny_bert, monkeypatch, tmp_path):
    monkeypatch.setitem(C.BUNDLED, "tiny-bert", lambda: tiny_bert)
    C.load_model.cache_clear()
    C.save_compressed(C.compress(tiny_bert, C.Recipe(quant="int8")), tmp_path / "m")
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    card["original"]["content_hash"] = "0" * 64
    (tmp_path / "m" / "card.json").write_text(json.dumps(card))
    with pytest.raises(C.CompressError, match="other weights"):
        C.load_compressed(tmp_path / "m")
    with pytest.raises(C.CompressError, match="not a saved compressed model"):
        C.load_compressed(tmp_path / "nothing")


def test_report_has_the_cli_shape(tiny_bert):
    c = C.compress(tiny_bert, C.Recipe(rank_mode="ratio", rank=0.25, quant="int8"))
    r = C.report(tiny_bert, c, batch=2, seq=16)
    assert set(r) >= {"recipe", "workload", "original", "compressed", "layers"}
    assert r["workload"]["batch"] == 2 and r["workload"]["seq"] == 16 and "flags" in r["workload"]
    for side in ("original", "compressed"):
        assert set(r[side]) >= {"size_bytes", "params", "latency_ms", "quality"}
        assert set(r[side]["latency_ms"]) >= {"p10", "p50", "p90"}
    assert r["original"]["quality"]["fidelity"] == pytest.approx(1.0, abs=1e-4)
    assert len(r["layers"]) == 12 and r["compressed"]["size_bytes"] < r["original"]["size_bytes"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "compress", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("args, message", [(["apply", "--rank", "3"], "from 0.0001 to 1"),
                                           (["apply", "--quant", "int3"], "quant must be one of none, int8"),
                                           (["apply", "--model", "nope"], "unknown model"),
                                           (["apply", "--runs", "2"], "from 7 to 1000"),
                                           (["apply", "--runs", "1000000000"], "from 7 to 1000"),  # (it never ended)
                                           (["bench", "--heal-steps", "150", "--runs", "5"], "from 7 to 1000"),
                                           (["report", "--out", "r.html", "--runs", "3"], "from 7 to 1000"),
                                           (["heal", "--model", "tinygpt", "--batch", "-5"], "batch and seq must be"),
                                           (["frobnicate"], "invalid choice")])
def test_cli_bad_arguments_one_line_exit_2(args, message):
    p = _cli(*args)
    assert p.returncode == 2 and p.stdout == ""
    lines = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.heavy  # make test-slow only: test_quantize's MiniLM int8 and test_quality's CLI run cover it
@pytest.mark.slow
def test_cli_apply_int8_minilm_3x_smaller_and_faithful(tmp_path):
    p = _cli("apply", "--model", "minilm", "--quant", "int8", "--batch", "2", "--seq", "32", "--out", str(tmp_path / "m"))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)  # exactly one JSON object on stdout
    assert r["original"]["size_bytes"] / r["compressed"]["size_bytes"] >= 3
    assert r["compressed"]["quality"]["fidelity"] >= 0.9
    assert r["workload"]["batch"] == 2 and r["recipe"]["quant"] == "int8"
    back = C.load_compressed(tmp_path / "m")
    assert back.recipe.quant == "int8" and back.info["card"]["quality"] == r["compressed"]["quality"]


@pytest.mark.slow
def test_cli_inspect_lists_every_layer():
    p = _cli("inspect", "--model", "minilm")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("encoder.layer.") == 36 and "embeddings" in p.stdout


def test_cli_heal_reports_unhealed_and_healed_and_saves(tiny_bert, monkeypatch, tmp_path, capsys):
    from compress.__main__ import main
    monkeypatch.setitem(C.BUNDLED, "tiny-bert", lambda: tiny_bert)
    C.load_model.cache_clear()
    text = tmp_path / "mine.txt"
    text.write_text("\n".join(f"Sentence number {i} is about {w}." for i, w in enumerate(["tea", "rain", "maps"] * 30)))
    rc = main(["heal", "--model", "tiny-bert", "--rank-mode", "ratio", "--rank", "0.25", "--quant", "int8",
               "--steps", "20", "--text", str(text), "--batch", "2", "--seq", "16", "--out", str(tmp_path / "m")])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    h = r["heal"]
    assert h["steps_run"] == 20 and h["dev_after"] >= h["dev_before"] and h["metric"] == "fidelity"
    assert r["recipe"]["heal_steps"] == 20 and len(r["recipe"]["heal_corpus"]) == 64  # sha256 of --text
    assert set(r["unhealed"]) >= {"size_bytes", "params", "quality"}
    assert r["unhealed"]["params"] == r["compressed"]["params"]  # healing changes weights, not shapes
    back = C.load_compressed(tmp_path / "m")
    ids = torch.randint(1000, 2000, (2, 7))
    healed = C.compress(tiny_bert, C.Recipe.from_dict(r["recipe"]), texts=text.read_text().splitlines())
    assert torch.equal(_out(back, ids), _out(healed, ids))  # seeded: the same healing gives the same weights
