"""Every page with an MPNet and a ModernBERT upload (AppTest): each page opens; Apply with heads + FFN + int8 shows the
fidelity of both; what the family cannot do (MPNet's attention variants, either family's token pooling) is greyed out
with the table's one line."""
import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from conftest import ROOT


@pytest.mark.parametrize("fixture", ["tiny_mpnet", "tiny_modernbert"])
def test_every_page_works_with_an_encoder_upload(fixture, request, monkeypatch):
    b = request.getfixturevalue(fixture)
    monkeypatch.setitem(C.BUNDLED, fixture, lambda: b)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["model"] = fixture
    at.run()
    assert not at.exception
    assert next(m for m in at.metric if m.label == "Layers x heads").value == "2 x 4"
    at.switch_page("ui/pages/spectra.py").run()
    assert not at.exception
    at.switch_page("ui/pages/compress.py").run()
    pool = at.radio(key="r_pool")
    assert pool.disabled and C.refusal(b, C.Recipe(pool=2, pool_at=1)) in pool.help
    attention = at.selectbox(key="r_attention")
    assert attention.disabled == (fixture == "tiny_mpnet")
    at.select_slider(key="r_heads").set_value(2).run()
    at.slider(key="r_ffn").set_value(0.5).run()
    at.selectbox(key="r_quant").set_value("int8").run()
    at.button[0].click().run()
    assert not at.exception and not at.error
    fidelity = [float(m.value) for m in at.metric if m.label == "fidelity · our sentences"]
    assert len(fidelity) == 2 and fidelity[0] == 1.0 and 0 < fidelity[1] <= 1.0  # the original's, the compressed one's
    for page in ("tradeoffs", "learn"):
        at.switch_page(f"ui/pages/{page}.py").run()
        assert not at.exception and not at.error, page
