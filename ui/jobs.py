"""This session's work on the server's one job queue (compress.job_queue): CPU-heavy work is submitted there and
waited for here with its place in the queue shown and a Cancel button; healing runs there in the background and
yields to waiting jobs between its steps. Every run of the page is a heartbeat: a closed tab's healing is cancelled."""
import hashlib
import hmac
import os
import secrets
import threading
import uuid
from dataclasses import dataclass

import streamlit as st

import compress as C
from compress.serve.settings import MAX_MINUTES, number
from compress.techniques.healdev import heal_size
from ui import cached, guide
from ui.safe import guarded, plain  # another session's label (its prompt): plain text, never markdown
from ui.state import HEALING, KEY


_WIRING = threading.Lock()


def queue():
    """The server's one queue, recording every job to the results store: the app wires them (the library's queue
    and store know nothing of each other). The first wiring of this server process marks the jobs a previous one
    gave but never ended as interrupted."""
    q = C.job_queue()
    with _WIRING:
        if q.log is None:
            store = C.default_store()
            store.interrupt_stale()
            q.log = store.record
    return q


def owner() -> str:
    """This browser session's id on the queue."""
    return st.session_state.setdefault("sid", uuid.uuid4().hex)


def client() -> str:
    """Who asks beyond this session: the browser's address ("" on localhost), or behind a reverse proxy the operator
    names (COMPRESS_TRUSTED_PROXY=1) the address it appended to X-Forwarded-For: else the whole room is one client."""
    if os.environ.get("COMPRESS_TRUSTED_PROXY") == "1":
        forwarded = (st.context.headers.get("X-Forwarded-For") or "").split(",")[-1].strip()
        if forwarded:
            return forwarded[:64]
    ip = st.context.ip_address
    return ip if isinstance(ip, str) else ""  # (None on localhost; AppTest's is a mock)


def run(kind: str, fn, label: str, *, key, failure: str = "show"):
    """Run fn(job) on the queue and wait for it here; its result, or None when it failed or was cancelled (said in
    one line). A job this session is still waiting for (the page was rerun by a click) is waited for again, unless
    `key` (what the job computes: a model, a sample) differs: then that job is cancelled and this one started (a
    result for another model would be kept under this one's key). Cancel stops the job however the click arrives:
    read during the wait (_asked), or by its callback at the start of the run it caused (a button that started the
    job is not pressed in that run; a fragment's click does not interrupt the run that waits). failure "raise": a
    failed job's one line is raised as a CompressError (the caller says it its own way), not shown here."""
    q, pending = queue(), st.session_state.setdefault("pending", {})  # kind -> (the job this session awaits, key)
    q.heartbeat(owner())
    if st.session_state.get("cancelled") == (kind, key, label):  # the run its Cancel caused: not started again
        st.session_state.pop("cancelled")
        st.info(plain(f"{label}: cancelled"))
        return None
    job, had = pending.get(kind, (None, None))
    if job is not None and had != key:
        q.cancel(job)
    if job is None or job.ended.is_set() or had != key:
        job = q.submit(kind, fn, owner(), label, limit_s=limit_s(kind))
        pending[kind] = (job, key)
    slot, box = st.empty(), st.empty()
    cancel = f"cancel_{job.id}"
    slot.button("Cancel", key=cancel, on_click=_cancel, args=(job, (kind, key, label)))  # shown while it waits or runs
    said, nudged, me = None, False, owner()  # (no session state in the loop: a closed tab's run raises there)
    try:
        while not job.ended.wait(0.25):
            q.heartbeat(me)
            asked = _asked(cancel)
            if asked in ("cancel", "stop"):  # Cancel clicked, or the tab closed: nobody waits for it any more
                q.cancel(job)
            ahead = q.position(job) - 1
            done = job.progress.get("done")  # a fraction the job reports (Apply, sizes, Learn): in steps of 5%
            msg = f"Waiting: {ahead} job(s) of other sessions ahead of yours: {job.label}" if ahead >= 0 else \
                f"Running: {job.label}" + (f" ({int(done * 20) * 5}%)" if isinstance(done, float) else "")
            if msg != said or (asked == "rerun" and not nudged):  # on a change (a browser redrawing every 0.25 s
                box.info(plain(msg))  # would load the CPU being timed), or once to let Streamlit end this run for
                said = msg  # a click's (a click in a fragment does not end it: then this waits on)
            nudged = asked == "rerun"
    except BaseException:  # Streamlit ended this run: for a rerun the job stays this session's, for a closed tab
        if _asked("") == "stop":  # or a reload nobody waits for it
            q.cancel(job)
        raise
    slot.empty()
    box.empty()
    pending.pop(kind, None)
    if job.state == "failed" and failure == "raise":
        raise C.CompressError(job.error)
    if job.state == "failed":
        st.error(plain(job.error))
    elif job.state != "done":
        st.info(plain(f"{job.label}: {job.state}"))
    return take(job)


def _cancel(job, ident) -> None:
    """Cancel's callback: the job cancelled, and the run the click caused does not start it again (run())."""
    queue().cancel(job)
    st.session_state.get("pending", {}).pop(ident[0], None)
    st.session_state.cancelled = ident
    st.toast(plain(f"{ident[2]}: cancelled"))  # (a run that does not wait for it again says nothing else)


def _asked(button: str) -> str | None:
    """What Streamlit holds for this session while this run waits: "stop" (the tab closed or reloaded), "cancel" (a
    click on `button`, waiting in the rerun it asked for), "rerun" (another click) or None. A click is otherwise read
    only by the next run, and a click inside a fragment does not end the run that waits (Streamlit queues it), so
    the wait reads it here. Streamlit's own state (1.67, pinned in requirements.txt), read defensively: None when
    it is not there (then Cancel acts at the next run, by its callback)."""
    try:
        from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
        req = get_script_run_ctx().script_requests
        with req._lock:
            state, widgets = req._state, req._rerun_data.widget_states
    except Exception:  # noqa: BLE001 - another Streamlit: the callback still cancels
        return None
    if state == ScriptRequestType.STOP:
        return "stop"
    if state != ScriptRequestType.RERUN:
        return None
    clicked = bool(button) and widgets is not None and any(w.id.endswith(button) and w.trigger_value
                                                           for w in widgets.widgets)
    return "cancel" if clicked else "rerun"


def limit_s(kind: str) -> float | None:
    """The time limit of a job the pages wait for (COMPRESS_JOB_MINUTES, default 30): none for healing (its own
    cap) and sweeps (theirs)."""
    if kind in ("heal", "sweep"):
        return None
    return 60.0 * number("COMPRESS_JOB_MINUTES", 30, most=MAX_MINUTES)


def take(job):
    """A done job's result, handed over once: the queue keeps its last jobs, not their models or spectra."""
    res, job.result = (job.result if job.state == "done" else None), None
    return res


def waiting(kind: str, key) -> bool:
    """Does this session await a job of this kind for this key (what it computes: submitted on an earlier run of the
    page)? One for another key (the model or the settings changed while it ran) is cancelled, not waited for: its
    result would be shown and kept under this key."""
    pending = st.session_state.get("pending", {})
    job, had = pending.get(kind, (None, key))
    if job is not None and had != key:
        queue().cancel(job)
        pending.pop(kind)
        st.toast(plain(f"{job.label}: cancelled (what it was computing changed)"))
    return job is not None and had == key


def history():
    """This session's jobs as the results store recorded them, and what a restart of the server interrupted."""
    store = C.default_store()
    mine = store.recent(20, owner())
    lost = [r for r in store.recent(200) if r["state"] == "interrupted"]
    if mine:
        with st.expander(f"This session's jobs ({len(mine)})"):
            st.dataframe([{k: r[k] for k in ("kind", "label", "state", "error")} for r in mine], hide_index=True)
    if lost:
        st.caption(f"{len(lost)} job(s) were interrupted by a restart of the server; if one was yours, press Apply "
                   "or Heal again to redo it.")  # (not their labels: another session's prompt or file name)


@guarded("the healing text's upload")  # a callback runs outside the page's boundary
def heal_text_changed():
    """The user's own healing text: its sha256 goes into the recipe (heal_corpus), its lines to the healer."""
    f = st.session_state.heal_file
    st.session_state.heal_texts, st.session_state[KEY + "heal_corpus"] = None, ""
    if f is None:
        return
    try:  # every limit of the library's, as it is read (a file of short lines would be millions of strings); the size
        heal_size(f.size, f.name)  # first: a body sent past the widget's limit by hand is never copied
        texts = C.read_heal_text(f.getvalue(), f.name)
    except C.CompressError as e:
        st.session_state.heal_error = str(e)
        return
    st.session_state.heal_texts = texts
    st.session_state[KEY + "heal_corpus"] = hashlib.sha256("\n".join(texts).encode()).hexdigest()


@dataclass
class Healer:  # a healing on the queue: who started it, the token in their URL, what it heals, its plan
    job: object
    client: str
    token: str
    key: tuple
    plan: tuple


_HEALERS: list[Healer] = []  # for one healing at a time per visitor, and for a reload to find its healing again
_HEALERS_LOCK = threading.Lock()


def _hold(h: Healer) -> None:
    """This session shows the healing h (its bar, its Stop) and takes its result; its URL keeps h's token."""
    queue().adopt(h.job, owner())
    st.session_state.heal_job, st.session_state.heal_key, st.session_state.heal_plan = h.job, h.key, h.plan
    st.session_state.heal_token = st.query_params[HEALING] = h.token


def find_healing() -> None:
    """A reload of the tab healing (a new session): the token its URL kept finds the healing again, with its bar,
    its Stop and its result, where the same client asks (a shared link's token opens nothing elsewhere)."""
    token = st.query_params.get(HEALING)
    if st.session_state.get("heal_job") is not None or not token:
        return
    with _HEALERS_LOCK:
        h = next((h for h in _HEALERS if hmac.compare_digest(h.token, str(token)) and h.client == client()), None)
        if h is not None and h.job.state not in ("cancelled", "failed", "interrupted"):
            _hold(h)


def start_healing(b, recipe: C.Recipe, minutes: float):
    """Heal on the queue (in the background: it outlives this run of the page); heal_progress polls it."""
    q, texts, me, who = queue(), st.session_state.get("heal_texts"), owner(), client()

    def fn(job):  # no streamlit calls in here: it runs on the queue's worker
        def progress(p):
            job.progress.update(p)
            q.yield_(job)  # waiting Apply jobs of other sessions run now, between two steps
        return C.compress(b, recipe, texts=texts, minutes=minutes, stop=job.stop, progress=progress)
    with _HEALERS_LOCK:  # (two tabs' clicks run at once, each on its own script thread: checked and added as one)
        _HEALERS[:] = [h for h in _HEALERS if not h.job.ended.is_set() or h.job.result is not None]
        mine = [h for h in _HEALERS if not h.job.ended.is_set() and (h.job.owner == me or who and h.client == who)]
        if mine:  # two tabs would take both long-job slots; a reload's new session shows the one running
            _hold(mine[0])
            raise C.CompressError("this browser is already healing a model (shown below, with its Stop): one "
                                  "healing at a time per visitor; Stop it or wait for it to end")
        h = Healer(q.submit("heal", fn, me, f"healing {b.name}: {recipe.describe()}"), who,
                   secrets.token_urlsafe(16), (cached.model_key(b), recipe.to_json()), (recipe.heal_steps, minutes))
        _HEALERS.append(h)
        _hold(h)


def heal_progress():
    """The healing job's progress, polled every second while there is one; no timer while nothing heals (a rerun of
    the page every second loads the CPU being timed and races the user's clicks: a CI run's preset was lost)."""
    if st.session_state.get("heal_job") is not None:
        _heal_poll()


@st.fragment(run_every=1.0)
@guarded("the healing progress")  # a fragment's rerun runs outside the page's boundary
def _heal_poll():
    job = st.session_state.get("heal_job")
    if job is None:
        return
    q = queue()
    q.heartbeat(owner())  # the page is open: keep healing
    if not job.ended.is_set():
        p, ahead = job.progress, q.position(job) - 1
        if ahead >= 0:
            st.progress(0.0, text=f"Healing waits: {ahead} job(s) ahead")
        elif "layer" in p and "step" not in p:  # budget + sensitivity: each layer is measured before healing
            st.progress(p["done"] / p["total"], text=f"Measuring sensitivity: layer {p['done']}/{p['total']}")
        else:  # the steps run, of how many, under which cap (never "step 0/?, about 0 s left" before the first)
            done, text = guide.heal_status(p, *st.session_state.heal_plan)
            st.progress(done, text=text)
        if st.button("Stop (keeps the best state so far)", key="heal_stop"):
            if "step" in p or "labeled" in p:  # (the static fit's labeling ends on Stop too)
                job.stop.set()  # not job.cancel: that drops the healing (a closed tab's)
            else:  # before healing began (sensitivity, the static table's distillation): nothing to keep: dropped
                q.cancel(job)
        return
    st.session_state.heal_job = None
    st.query_params.pop(HEALING, None)
    with _HEALERS_LOCK:
        _HEALERS[:] = [h for h in _HEALERS if h.job is not job]
    if job.state == "failed":
        st.session_state.heal_error = job.error
    elif (healed := take(job)) is not None:
        cached.keep_healed(st.session_state.heal_key, healed)
        st.session_state.auto_apply = True  # measure and show it on the full rerun
    st.rerun()
