"""Healing a product-quantized table's codebooks (emb_pq_heal, pq.trainable_books): float Parameters while healing,
stored again as before after it (int8 at a new scale, or fp16), the codes unchanged, and the zip of such a model."""
import pytest
import torch

import compress as C
from conftest import as_bundled
from compress.models.adapters import forward
from compress.techniques import pq
from compress.techniques.heal import trainable
from compress.techniques.pq import PQEmbedding


@pytest.fixture
def bundled(tiny_bert, monkeypatch):
    yield from as_bundled(monkeypatch, {"tiny-bert": tiny_bert})


def _table(bundle, model=None):
    return (model if model is not None else bundle.model).get_submodule(bundle.adapter.word_embeddings)


@pytest.mark.parametrize("top", [0, 3])
def test_inside_the_codebooks_are_parameters_and_after_they_are_stored_as_before(top):
    """Inside: the float codebooks (as the lookup reads them) are what healing's trainable() lists; after: the same
    dtypes and shapes, and the table reads what the Parameters held to within the stored rounding."""
    torch.manual_seed(0)
    table = torch.nn.Embedding(40, 16)
    model = torch.nn.Module()
    model.emb = PQEmbedding.from_embedding(table, 8, top=top)
    adapter = type("A", (), {"word_embeddings": "emb", "blocks": "blocks", "block_list": lambda self, m: m.blocks})()
    model.blocks = torch.nn.ModuleList()
    before = {n: t.clone() for n, t in model.emb.state_dict().items()}
    ids = torch.arange(40)[None]
    with pq.trainable_books(model, adapter):
        names = [n for n, _ in trainable(model, adapter)]
        assert names == ["emb." + n + "codebook" for n in ("", "top_")[:1 + bool(top)]]
        with torch.no_grad():
            assert torch.equal(model.emb(ids), _read(before, top, ids))  # the same table as float
            for _, p in model.emb.named_parameters():
                p.mul_(1.5).add_(0.01)  # what healing might do
            moved = model.emb(ids).clone()
    assert not list(model.emb.parameters())
    after = model.emb.state_dict()
    assert {n: (t.dtype, t.shape) for n, t in after.items()} == {n: (t.dtype, t.shape) for n, t in before.items()}
    assert torch.equal(after["codes"], before["codes"])  # the codes stay
    step = (after["scale"].float().max() if top else moved.abs().max() / 1000) + 1e-6  # int8's step, or fp16's
    with torch.no_grad():
        assert (model.emb(ids) - moved).abs().max() <= step / 2 + 1e-6
        assert not torch.equal(model.emb(ids), _read(before, top, ids))


def _read(state, top, ids):
    """The table's rows from a saved state (PQEmbedding's own forward, rebuilt from it)."""
    m = PQEmbedding(40, 16, 8, top=top)
    m.load_state_dict(state)
    return m(ids)


def test_healing_the_codebooks_moves_them_not_the_codes_and_keeps_the_best_state(tiny_bert):
    r = dict(vocab=0.5, emb_pq=8, emb_pq_top=10, layers=1, heal_steps=12, heal_lr=3e-3, heal_seed=1)
    still = C.compress(tiny_bert, C.Recipe(**r))
    healed = C.compress(tiny_bert, C.Recipe(**r, emb_pq_heal=True))
    a, b = _table(tiny_bert, still.model), _table(tiny_bert, healed.model)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.top_codes, b.top_codes)
    assert b.codebook.dtype == b.top_codebook.dtype == torch.int8 and not list(b.parameters())
    h = healed.applied["heal"]
    assert h["best_step"] > 0 and h["dev_after"] >= h["dev_before"]
    assert not torch.equal(pq.centroids(a.codebook, a.scale[::8]), pq.centroids(b.codebook, b.scale[::8]))
    assert "codebooks healed" in C.Recipe(**r, emb_pq_heal=True).describe()
    assert "codebooks" not in C.Recipe(**r).describe()
    assert C.Recipe(emb_pq_heal=True).describe() == C.Recipe().describe()  # nothing to heal: the option does nothing
    off = C.FIELDS["emb_pq_heal"].off  # its control greyed out, saying why
    assert "product quantization" in off(C.Recipe(heal_steps=3)) and off(C.Recipe(**r)) is None


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_a_model_with_healed_codebooks_saves_and_reloads_to_the_same_outputs(bundled, tiny_bert, tmp_path, runtime):
    comp = C.compress(tiny_bert, C.Recipe(emb_pq=8, quant="int8", heal_steps=4, heal_lr=3e-3, emb_pq_heal=True,
                                          runtime=runtime))
    assert comp.applied["runtime_applied"] == runtime, comp.applied.get("runtime_reason")
    back = C.load_compressed(C.save_compressed(comp, tmp_path / "m.zip"))
    ids = tiny_bert.tokenizer(["codebooks that learned"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(forward(comp.model, tiny_bert.adapter, ids), forward(back.model, tiny_bert.adapter, ids))
