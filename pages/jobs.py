"""Background jobs of a session: healing runs in a thread (widget clicks rerun the page, not the thread)."""
import hashlib
import threading

import streamlit as st

import compress as C
from pages import cached
from pages.state import KEY


def heal_text_changed():
    """The user's own healing text: its sha256 goes into the recipe (heal_corpus), its lines to the healer."""
    f = st.session_state.heal_file
    st.session_state.heal_texts, st.session_state[KEY + "heal_corpus"] = None, ""
    if f is None:
        return
    if f.size > C.MAX_HEAL_BYTES:
        st.session_state.heal_error = f"{f.name} is {f.size / 2**20:.0f} MB; healing text is limited to " \
                                      f"{C.MAX_HEAL_BYTES // 2**20} MB"
        return
    try:
        texts = [t.strip() for t in f.getvalue().decode("utf-8").splitlines() if t.strip()]
    except UnicodeDecodeError:
        st.session_state.heal_error = f"{f.name} is not UTF-8 text"
        return
    if len(texts) < 20:
        st.session_state.heal_error = f"{f.name} has {len(texts)} non-empty lines; healing needs at least 20"
        return
    st.session_state.heal_texts = texts
    st.session_state[KEY + "heal_corpus"] = hashlib.sha256("\n".join(texts).encode()).hexdigest()


MAX_HEAL_JOBS = 2  # healing threads across every session of this server (they outlive their tab)
_SLOTS = threading.BoundedSemaphore(MAX_HEAL_JOBS)


def start_healing(b, recipe: C.Recipe, minutes: float):
    """Heal in a background thread; heal_progress polls it. At most MAX_HEAL_JOBS run in the whole server."""
    if not _SLOTS.acquire(blocking=False):
        st.session_state.heal_error = (f"{MAX_HEAL_JOBS} healing runs are already going on this server; "
                                       "press Apply again when one has finished")
        return
    job = {"key": (cached.model_key(b), recipe.to_json()), "stop": threading.Event(), "progress": {},
           "bundle": None, "error": None}
    texts = st.session_state.get("heal_texts")

    def run():  # no streamlit calls in here: it runs outside the script thread
        try:
            job["bundle"] = C.compress(b, recipe, texts=texts, minutes=minutes, stop=job["stop"],
                                       progress=lambda p: job["progress"].update(p))
        except BaseException as e:  # noqa: BLE001 - a tokenizer's panic is a BaseException: shown, never silent
            job["error"] = str(e) if isinstance(e, C.CompressError) else f"{type(e).__name__}: {str(e)[:300]}"
        finally:
            _SLOTS.release()
    job["thread"] = threading.Thread(target=run, daemon=True)
    job["thread"].start()
    st.session_state.heal_job = job


@st.fragment(run_every=1.0)
def heal_progress():
    job = st.session_state.get("heal_job")
    if job is None:
        return
    if job["thread"].is_alive():
        p = job["progress"]
        if "layer" in p and "step" not in p:  # budget + sensitivity: each layer is measured before healing
            st.progress(p["done"] / p["total"], text=f"Measuring sensitivity: layer {p['done']}/{p['total']}")
            return
        done = p.get("step", 0) / max(1, p.get("steps", 1))
        dev = f", dev {p['dev']:.4f}" if isinstance(p.get("dev"), float) else ""
        loss = f", loss {p['loss']:.4f}" if isinstance(p.get("loss"), float) else ""
        st.progress(min(1.0, done), text=f"Healing: step {p.get('step', 0)}/{p.get('steps', '?')}{loss}{dev}, "
                                          f"about {p.get('seconds_left', 0):.0f} s left")
        if st.button("Stop (keeps the best state so far)", key="heal_stop"):
            job["stop"].set()
        return
    st.session_state.heal_job = None
    if job["error"]:
        st.session_state.heal_error = job["error"]
    else:
        cached.keep_healed(job["key"], job["bundle"])
        st.session_state.auto_apply = True  # measure and show it on the full rerun
    st.rerun()
