"""What a visitor sends besides a model (a hostile review's findings, fixed by class): a healing text is held to every
limit of the library as it is read, a sweep's space is bounded in what it stores and what checking it costs, healing
per trial is the sweep's own, the job log is indexed and bounded, and another session's job is never described."""
import sqlite3

import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from compress.serve import store as S
from compress.serve.store import Store
from compress.sweep import space, studies


@pytest.mark.parametrize("data, says", [
    (b"ab\n" * 2_796_201, "has more than 100,000 lines"),  # 8 MB of short lines: millions of strings before
    ("a\u2028".encode() * 150_000, "has more than 100,000 lines"),  # str.splitlines' other breaks count too
    (b"x" * ((8 << 20) + 1), "is 8.0 MB; healing text is limited to 8 MB"),
    (b"\xff\xfe" * 40, "is not UTF-8 text"), (b"one\r\ntwo\n\n", "has 2 non-empty lines")])
def test_a_healing_text_is_refused_as_it_is_read(data, says):
    with pytest.raises(C.CompressError, match=f"^h.txt {says}"):
        C.read_heal_text(data, "h.txt")


def test_a_healing_text_reads_as_splitlines_did():
    text = "  first line \r\nsecond\n\n" + "\n".join(f"line {i}" for i in range(30)) + "\u2029last"
    assert C.read_heal_text(text.encode(), "h") == [t.strip() for t in text.splitlines() if t.strip()]


def _heal_upload():
    import streamlit as st
    from ui import jobs
    st.file_uploader("text", key="heal_file", on_change=jobs.heal_text_changed)
    st.write(f"texts {len(st.session_state.get('heal_texts') or [])} error {st.session_state.get('heal_error')}")


def test_the_pages_healing_upload_holds_no_more_lines_than_healing_takes():
    at = AppTest.from_function(_heal_upload, default_timeout=60).run()
    at.file_uploader(key="heal_file").upload("h.txt", b"ab\n" * 2_796_201).run()
    assert [m.value for m in at.markdown] == [
        "texts 0 error h.txt has more than 100,000 lines; healing text is limited to that"]
    at.file_uploader(key="heal_file").upload("ok.txt", b"a sentence\n" * 25).run()
    assert [m.value for m in at.markdown][0].startswith("texts 25 error")


def test_a_healing_upload_past_its_size_is_refused_from_its_size_never_copied(monkeypatch):
    """Streamlit holds a widget to the server's one upload limit (the model uploader's 3,200 MB), not the 8 MB the
    healing widget shows: a body sent by hand past it is refused from its size, before getvalue copies it."""
    from streamlit.runtime.uploaded_file_manager import UploadedFile
    monkeypatch.setattr(UploadedFile, "getvalue", lambda self: pytest.fail("copied before its size was checked"))
    at = AppTest.from_function(_heal_upload, default_timeout=60).run()
    at.file_uploader(key="heal_file").upload("big.txt", b"a sentence\n" * 800_000).run()  # 8.4 MB
    assert [m.value for m in at.markdown] == ["texts 0 error big.txt is 8.4 MB; healing text is limited to 8 MB"]


@pytest.mark.parametrize("vary, fixed, heal, says", [
    ({"ffn": "0.001:0.6:0.001", "rank": "0.001:0.5:0.001"}, "", 0, "list 1,100 values together; at most 1,000"),
    ({"quant": "none,int8"}, "heal_steps=100000", 0, "heal_steps is not fixed"),
    ({"quant": "none,int8"}, "heal_corpus=" + "ab" * 32, 0, "heal_corpus is not fixed"),
    ({"quant": "none,int8"}, "", 5001, "healing steps per trial: 0 to 5,000"),
])
def test_a_sweeps_space_is_bounded(tiny_gpt, vary, fixed, heal, says):
    with pytest.raises(C.CompressError, match=says):
        studies.plan(tiny_gpt, vary, fixed, ["size_mb"], 2, None, heal)


def test_checking_refused_values_has_a_budget(tiny_gpt, monkeypatch):
    """Each refused value looks for a partner among the other fields' values: all of them together build at most
    MAX_CHECKS recipes (the page waits for the check)."""
    calls = []
    def refusal(b, r):  # every ffn below 1 needs layers=3, the last partner each search tries
        calls.append(r)
        return "refused" if r.ffn != 1.0 and r.layers != 3 else None
    monkeypatch.setattr(space, "refusal", refusal)
    plan = space.Space(tiny_gpt.name, {"ffn": tuple(i / 100 for i in range(1, 30)), "layers": (1, 2, 3)},
                       ("size_mb",))
    assert space.check(plan, tiny_gpt) is plan  # 29 values x 3 partners: within the budget
    monkeypatch.setattr(space, "MAX_CHECKS", 50)
    calls.clear()
    with pytest.raises(C.CompressError, match="too many refused values to check"):
        space.check(plan, tiny_gpt)
    assert len(calls) <= 1 + 17 + 50  # the base, the values alone, the budget


def test_the_job_log_is_indexed_kept_bounded_and_another_sessions_label_never_shown(tmp_path, monkeypatch):
    db = tmp_path / "s.sqlite"
    st = Store(db)
    with sqlite3.connect(db) as c:
        assert {"jobs_created", "jobs_owner_created", "jobs_state"} <= {
            r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        plan = " ".join(r[-1] for r in c.execute(
            "EXPLAIN QUERY PLAN SELECT label FROM jobs WHERE owner = 'x' ORDER BY created DESC LIMIT 20"))
        assert "jobs_owner_created" in plan and "TEMP B-TREE" not in plan  # no scan, no sort per rerun
        c.executemany("INSERT INTO jobs (key, owner, label, state, created, host, pid) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      [(f"k{i}", "someone-else", "my private notes", "running", float(i), "h", 1) for i in range(30)])
    monkeypatch.setattr(S, "KEEP_JOBS", 10)
    st.interrupt_stale()
    assert [r["created"] for r in st.recent(100)] == [float(i) for i in range(29, 19, -1)]  # the newest 10
    with sqlite3.connect(db) as c:
        c.execute("UPDATE jobs SET state = 'interrupted'")
    monkeypatch.setattr(C, "default_store", lambda: Store(db))  # (AppTest runs the script in this process)
    at = AppTest.from_function(_history, default_timeout=60).run()
    words = " ".join(c.value for c in at.caption)
    assert "10 job(s) were interrupted" in words and "private" not in words


def _history():
    from ui import jobs
    jobs.history()


def test_a_healing_field_is_never_varied(tiny_gpt):
    """--vary heal_steps=100000 went round the per-trial bound: only the fields the page offers (variable()) vary."""
    with pytest.raises(C.CompressError, match="heal_steps cannot be varied"):
        studies.plan(tiny_gpt, {"rank": "0.5", "heal_steps": "100000"}, "rank_mode=ratio", ["size_mb"], 1)
