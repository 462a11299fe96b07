"""Quality on both evaluation sets, the measures for outputs of another width, and the real-sentence workload."""
import json
import subprocess
import sys

import pytest
import torch

import compress as C
from compress.measure import core as measure_core, evaluate
from compress.measure.evaluate import neighbours
from conftest import ROOT


def test_encoder_quality_names_both_sets_and_labels_them(tiny_bert):
    q = C.quality(C.compress(tiny_bert, C.Recipe(quant="int8")), tiny_bert)
    assert list(q) == ["fidelity", "retrieval_overlap", "fidelity_docs", "retrieval_overlap_docs"]
    assert all(0 < v <= 1 for v in q.values())
    assert C.metric_label("fidelity") == "fidelity · our sentences"
    assert C.metric_label("retrieval_overlap_docs") == "retrieval overlap · Python docs"
    assert C.metric_label("bits_per_char") == "bits per char"


def test_the_sentences_that_moved_most_are_the_lowest_cosines_whose_mean_is_fidelity(tiny_bert):
    """farthest: the n sentences of a set with the lowest cosine to the original's embedding, lowest first, each
    cosine the one fidelity averages; the original against itself moves nothing."""
    comp = C.compress(tiny_bert, C.Recipe(vocab=0.1, quant="int8"))
    for name, suffix in (("project", ""), ("docs", "_docs")):
        sentences = C.eval_set(name)[0]
        cos = (evaluate.embed(comp, sentences) * evaluate.embed(tiny_bert, sentences)).sum(-1)
        far = C.farthest(comp, tiny_bert, name, n=4)
        assert [f["sentence"] for f in far] == [sentences[i] for i in cos.argsort()[:4].tolist()]
        assert [f["cosine"] for f in far] == sorted(f["cosine"] for f in far) and far[0]["cosine"] < far[-1]["cosine"]
        assert all(abs(f["cosine"] - float(cos[sentences.index(f["sentence"])])) < 1e-4 for f in far)
        assert abs(float(cos.mean()) - C.quality(comp, tiny_bert)["fidelity" + suffix]) < 1e-4
    assert all(f["cosine"] > 0.9999 for f in C.farthest(tiny_bert, tiny_bert, n=3))


def test_a_decoders_reference_is_kept_under_its_bound_and_gives_the_same_numbers(tiny_gpt, monkeypatch):
    """The original's own quality once per bundle; its next-token log-probs kept while small: the same numbers either
    way, and none kept over the bound (a 32k vocabulary's would take GBs)."""
    comp = C.compress(tiny_gpt, C.Recipe(quant="int8"))
    tiny_gpt.cache.clear()
    monkeypatch.setattr(evaluate, "MAX_REF_BYTES", 0)
    fresh = C.quality(comp, tiny_gpt)
    assert not [k for k in tiny_gpt.cache if k[0] == "next_token_ref"]
    monkeypatch.setattr(evaluate, "MAX_REF_BYTES", 64 << 20)
    comp.cache.clear()  # (its quality is kept too: measured again here, with the original's reference kept)
    assert C.quality(comp, tiny_gpt) == fresh and [k for k in tiny_gpt.cache if k[0] == "next_token_ref"]
    comp.cache.clear()
    assert C.quality(comp, tiny_gpt) == fresh  # from the kept reference
    own = C.quality(tiny_gpt, tiny_gpt)
    key = ("quality", tiny_gpt.name, tiny_gpt.content_hash)
    assert own["next_token_kl"] == 0.0 and own["top1_agreement"] == 1.0 and tiny_gpt.cache[key] == own
    assert C.quality(tiny_gpt, tiny_gpt) == own and fresh["next_token_kl"] > 0


def test_neighbour_agreement_and_similarity_correlation_need_no_common_width():
    g = torch.Generator().manual_seed(0)
    ref = torch.nn.functional.normalize(torch.randn(60, 16, generator=g), dim=-1)
    rot = torch.linalg.qr(torch.randn(32, 32, generator=g))[0][:, :16]  # (32, 16) orthonormal columns
    wider = ref @ rot.T                                                  # (60, 32): the same geometry, wider
    assert neighbours(wider, ref) == {"neighbour_agreement": 1.0, "similarity_spearman": 1.0}
    noisy = torch.nn.functional.normalize(wider + 0.05 * torch.randn(60, 32, generator=g), dim=-1)
    other = torch.nn.functional.normalize(torch.randn(60, 8, generator=g), dim=-1)
    n, o = neighbours(noisy, ref), neighbours(other, ref)
    assert 1 > n["neighbour_agreement"] > o["neighbour_agreement"] and 1 > n["similarity_spearman"] > 0.5
    assert abs(o["similarity_spearman"]) < 0.2  # unrelated embeddings: no correlation


@pytest.mark.parametrize("fixture, rate", [("tiny_bert", "sentences_per_s"), ("tiny_gpt", "tokens_per_s")])
def test_sentence_workload_times_every_batch_at_least_once_and_gives_the_rate(fixture, rate, request, monkeypatch):
    from compress.table.pipeline import STRETCH
    monkeypatch.setattr(measure_core, "ROUND_BUSY", 1.0)  # no round dropped for another process: the batches timed
    monkeypatch.setattr(measure_core, "BUSY", 1.0)        # are known
    b = request.getfixturevalue(fixture)
    groups = evaluate.sentence_groups(32)
    lat = C.benchmark(b, C.compress(b, C.Recipe(quant="int8")), workload="sentences")
    runs = lat["original"]["runs"]
    assert runs >= 7 and runs * STRETCH >= len(groups)  # a run: STRETCH batches in a row, cycling through them all
    timed = [groups[i % len(groups)] for i in range(2 * STRETCH, (2 + runs) * STRETCH)]  # after 2 warm-up runs
    n = sum(map(len, timed)) if rate == "sentences_per_s" else \
        sum(int(evaluate.batches(b, g, 32)[0][1].sum()) for g in timed)
    for v in lat.values():
        assert v["runs"] == runs and v[rate] == pytest.approx(n / (v["total_ms"] / 1e3), rel=1e-3)
    row = C.row({**C.numbers(b), "quality": {}}, {**C.numbers(b), "quality": {}}, lat)
    assert row[f"x {rate}"] == round(lat["compressed"][rate] / lat["original"][rate], 2)
    with pytest.raises(C.CompressError, match="workload must be one of"):
        C.benchmark(b, b, workload="words")


@pytest.mark.heavy  # make test-slow only: the test above times the same workload in-process (rates, every batch),
def test_cli_reports_the_sentence_workload():  # the CLI's other tests its JSON; here a real-size tinygpt, a minute
    p = subprocess.run([sys.executable, "-m", "compress", "apply", "--model", "tinygpt", "--quant", "int8",
                        "--workload", "sentences"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    out = json.loads(p.stdout)
    assert out["workload"]["kind"] == "sentences" and out["workload"]["texts"] == evaluate.sentence_count()
    assert out["compressed"]["latency_ms"]["tokens_per_s"] > 0 and out["workload"]["runs"] >= 7


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_gpt"])
def test_the_passages_workload_is_the_evaluation_text_in_windows(fixture, request):
    """Real text at a chosen length: both evaluation sets joined into one token stream, cut into batch x seq."""
    b = request.getfixturevalue(fixture)
    ids, mask = evaluate.passages(b, 3, 40)
    assert ids.shape == mask.shape == (3, 40) and bool(mask.all())
    texts = [s for name in C.EVAL_SETS for s in evaluate.eval_set(name)[0]]
    enc = b.tokenizer(texts[:10], padding=True, return_tensors="pt")
    stream = enc["input_ids"][enc["attention_mask"].bool()].tolist()
    assert ids.flatten().tolist()[:len(stream[:120])] == stream[:120]  # the sentences themselves, in order
    assert torch.equal(evaluate.shaped(b, "passages", 3, 40)[0], ids)  # the same every call
    assert not torch.equal(evaluate.shaped(b, "ids", 3, 40)[0], ids)  # random ids are another input
    many = evaluate.passages(b, 64, 64)[0]  # longer than the stream for tinygpt's bytes? it repeats, never runs out
    assert many.shape == (64, 64)
    with pytest.raises(C.CompressError, match="seq <= the model's"):
        evaluate.passages(b, 1, b.info["max_positions"] + 1)
    m = C.measure_compression(b, C.compress(b, C.Recipe(quant="int8")), "passages", 2, 16, 7)
    d = m.to_dict()
    assert d["workload"]["kind"] == "passages" and (d["workload"]["batch"], d["workload"]["seq"]) == (2, 16)
    assert d["compressed"]["latency_ms"]["p50"] > 0
    from compress.outputs.html import workload_text
    assert workload_text(d["workload"]) == f"{C.WORKLOADS['passages']} (2x16)"


def test_the_passages_workload_needs_a_tokenizer(tiny_bert):
    import dataclasses
    bare = dataclasses.replace(tiny_bert, tokenizer=None)
    with pytest.raises(C.CompressError, match="no tokenizer"):
        evaluate.passages(bare, 2, 16)


def test_a_bundles_quality_is_measured_once_per_original(tiny_bert, monkeypatch):
    """The peer (and any cached recipe) is measured once: later Applies read its quality from its cache; another
    original is another key; the returned dict is a copy (a caller's change never reaches the cache)."""
    comp = C.compress(tiny_bert, C.Recipe(quant="int8"))
    calls = []
    real = evaluate._quality
    monkeypatch.setattr(evaluate, "_quality", lambda b, o: calls.append((b, o)) or real(b, o))
    first = C.quality(comp, tiny_bert)
    first["fidelity"] = -1.0
    again = C.quality(comp, tiny_bert)
    assert len(calls) == 1 and again["fidelity"] > 0 and again == real(comp, tiny_bert)
    other = C.compress(tiny_bert, C.Recipe(quant="int8"))  # another bundle: measured on its own
    C.quality(other, tiny_bert)
    assert len(calls) == 2
