"""The pages' side of the job queue (ui/jobs.py), from a hostile review: a job this session awaits is never handed
back for another key (a model switched while sizes were measured showed, and cached for every session, the other
model's numbers), Cancel's callback keeps the run it caused from starting the job again, every job the pages wait for
has a time limit, and the kinds that copy a model are bounded in memory."""
import hashlib
import tempfile
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from compress.serve import membound
from compress.serve.cancel import checkpoint
from compress.techniques import sensitivity, static
from ui import safe


def _script():
    import streamlit as st
    from ui import jobs
    got = jobs.run("sizes", lambda job: "mine", "sizes of mine", key="mine")
    st.write(f"got {got}")


@pytest.fixture
def blocked():
    """A job of the kind 'sizes' for another model, running on the app's queue until released."""
    from ui import jobs
    release = threading.Event()
    def theirs(job):
        while not release.wait(0.05):
            checkpoint()  # as the library's loops do: a cancelled job ends here
        return "theirs"
    job = jobs.queue().submit("sizes", theirs, "x", "sizes of theirs")
    yield job
    release.set()


def test_a_pending_job_for_another_key_is_cancelled_not_handed_back(blocked):
    at = AppTest.from_function(_script, default_timeout=60)
    at.session_state["pending"] = {"sizes": (blocked, "theirs")}  # awaited on an earlier run, for another model
    at.run()
    assert not at.exception
    assert [m.value for m in at.markdown] == ["got mine"]
    assert blocked.ended.wait(10) and blocked.state == "cancelled"


def test_every_job_a_page_waits_for_names_what_it_computes():
    """A keyless job was handed back to a page showing another model (the Learn article's rows were stored under
    the wrong model for every session): run() has no default key."""
    import inspect
    from ui import jobs
    assert inspect.signature(jobs.run).parameters["key"].default is inspect.Parameter.empty


def _waits():
    import streamlit as st
    from ui import jobs
    st.write(f"waits {jobs.waiting('sizes', 'mine')}")


@pytest.mark.parametrize("had", ["mine", "theirs"])
def test_a_job_is_waited_for_again_only_for_the_key_it_computes(blocked, had):
    at = AppTest.from_function(_waits, default_timeout=60)
    at.session_state["pending"] = {"sizes": (blocked, had)}  # a click reran the page: the model may have changed
    at.run()
    assert [m.value for m in at.markdown] == [f"waits {had == 'mine'}"]
    if had == "mine":
        assert not blocked.ended.wait(0.5) and "sizes" in at.session_state["pending"]
    else:  # the other model's job: not started again by the page (its button was not pressed), cancelled
        assert blocked.ended.wait(10) and blocked.state == "cancelled" and at.session_state["pending"] == {}


def test_the_run_a_cancel_caused_does_not_start_the_job_again():
    at = AppTest.from_function(_script, default_timeout=60)
    at.session_state["cancelled"] = ("sizes", "mine", "sizes of mine")  # what Cancel's callback leaves
    at.run()
    assert [m.value for m in at.markdown] == ["got None"]
    assert any(i.value == safe.plain("sizes of mine: cancelled") for i in at.info)
    at.run()  # the next run is the user's: the job runs
    assert [m.value for m in at.markdown] == ["got mine"]


def test_every_job_the_pages_wait_for_has_a_time_limit(monkeypatch):
    from ui import jobs
    assert jobs.limit_s("apply") == 30 * 60 and jobs.limit_s("load") == 30 * 60
    assert jobs.limit_s("heal") is None and jobs.limit_s("sweep") is None  # their own caps
    monkeypatch.setenv("COMPRESS_JOB_MINUTES", "2")
    assert jobs.limit_s("sizes") == 120


def test_sensitivity_and_the_token_table_are_bounded_in_memory(tiny_bert, monkeypatch):
    monkeypatch.setenv("COMPRESS_MEM_BUDGET_MB", "0.001")
    fresh = C.ModelBundle(tiny_bert.model, "t", tiny_bert.adapter, tiny_bert.tokenizer, "t" * 64, dict(tiny_bert.info))
    for fn in (lambda: sensitivity.layer_sensitivity(tiny_bert, C.spectra(tiny_bert)),
               lambda: static.distill_table(fresh)):
        with pytest.raises(C.CompressError, match="nothing was started"):
            fn()
    assert {"sensitivity", "distill"} <= set(membound.FACTOR)


def _closing_tab_script():
    import time
    from compress.serve.cancel import checkpoint
    from ui import jobs

    def slow(job):  # 20 s of work with the library's checkpoints between its parts
        for _ in range(400):
            time.sleep(0.05)
            checkpoint()
        return "late"
    q, calls = jobs.queue(), []
    real = q.heartbeat

    class Stop(BaseException):  # what Streamlit raises in a run whose session has ended
        pass

    def beat(owner):  # the tab closes while the run waits: the session's run is stopped at its next call
        calls.append(owner)
        if len(calls) > 2:
            jobs._asked = lambda button: "stop"
            raise Stop()
        real(owner)
    q.heartbeat = beat
    try:
        jobs.run("apply", slow, "an apply", key="k")
    except Stop:
        pass
    finally:
        q.heartbeat = real


def test_a_closed_tab_cancels_the_job_its_run_waited_for():
    from ui import jobs
    asked = jobs._asked
    try:
        AppTest.from_function(_closing_tab_script, default_timeout=60).run()
    finally:
        jobs._asked = asked
    job = next(j for j in reversed(jobs.queue().jobs()) if j.label == "an apply")
    assert job.ended.wait(10) and job.state == "cancelled"


def test_an_upload_is_loaded_by_the_page_with_a_cancel_and_its_folder_removed(app, good, tmp_path):
    """The upload is staged by the widget's callback and loaded by the sidebar's run through run() (its Cancel and
    place in line; a callback can show neither). Cancelled: the model that was active stays and nothing staged is
    left; then loaded: the folder it was read from is removed."""
    from test_uploads import make_zip
    raw = make_zip(tmp_path / "m.zip", good).read_bytes()
    key = f"upload:{hashlib.sha256(raw).hexdigest()[:16]}"
    app.run()
    app.radio(key="model_source").set_value("Upload a zip").run()
    app.session_state["cancelled"] = ("load", key, f"loading {key}")  # what its Cancel's callback leaves
    app.file_uploader(key="upload").upload("m.zip", raw).run()
    assert not app.exception and "tiny-bert" in app.sidebar.caption[-1].value
    assert any("cancelled" in i.value for i in app.sidebar.info) and "staged" not in app.session_state
    app.file_uploader(key="upload").upload("m2.zip", raw).run()  # chosen again: loaded
    assert not app.exception and "m2.zip" in app.sidebar.caption[-1].value
    assert "staged" not in app.session_state
    assert not [p for p in Path(tempfile.gettempdir()).glob("compress-sidebar-*") if (p / "m2.zip").exists()]


def _heal_twice():
    import streamlit as st
    import compress as C
    from ui import jobs
    try:
        jobs.start_healing(C.load_model("tinygpt"), C.Recipe(heal_steps=10), 1.0)
        st.write("started")
    except C.CompressError as e:
        st.write(f"refused: {e}")


def test_one_healing_at_a_time_per_visitor_so_two_tabs_cannot_take_both_long_slots(monkeypatch):
    """A second tab (another session, the same browser address) is refused while the first one's healing lives; the
    address behind a reverse proxy is the one it appended to X-Forwarded-For, only when the operator says so."""
    from ui import jobs
    release = threading.Event()
    def waits(bundle, recipe, texts=None, minutes=None, stop=None, progress=None):
        while not release.wait(0.05):
            checkpoint()
    monkeypatch.setattr(C, "compress", waits)
    monkeypatch.setattr(jobs, "client", lambda: "203.0.113.7")
    try:
        first, second = (AppTest.from_function(_heal_twice, default_timeout=60).run() for _ in range(2))
        assert [m.value for m in first.markdown] == ["started"]
        said = [m.value for m in second.markdown][0]
        assert said.startswith("refused: this browser is already healing a model (shown below, with its Stop)")
        monkeypatch.setattr(jobs, "client", lambda: "198.51.100.9")  # another visitor: its own healing
        assert [m.value for m in AppTest.from_function(_heal_twice, default_timeout=60).run().markdown] == ["started"]
    finally:
        release.set()
        assert all(h.job.ended.wait(30) for h in jobs._HEALERS)  # (a job left running aborts the interpreter's exit)
    monkeypatch.undo()
    import streamlit as st
    headers = {"X-Forwarded-For": "6.6.6.6, 192.0.2.44"}  # (the browser's claim, then what the proxy appended)
    monkeypatch.setattr(type(st.context), "headers", property(lambda self: headers))
    monkeypatch.setattr(type(st.context), "ip_address", property(lambda self: "10.0.0.1"))  # the proxy
    assert jobs.client() == "10.0.0.1"  # not trusted unless the operator says so
    monkeypatch.setenv("COMPRESS_TRUSTED_PROXY", "1")
    assert jobs.client() == "192.0.2.44"
