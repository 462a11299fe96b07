"""The app's shell: what every page runs first (session state, the sidebar model picker), and page()."""
import dataclasses
import hashlib
import runpy
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import streamlit as st

import compress as C
from ui import cached, compare, jobs, safe
from ui.state import KEY, MINUTES, active, init_state, set_recipe


def page() -> C.ModelBundle:
    """Top of every page: make sure app.py's setup (session state, sidebar) ran in this run, and return the active
    model. AppTest's switch_page runs the page as the main script, without app.py, on every run (a real server always
    routes through app.py: no pages/ folder lies beside it, so Streamlit's legacy page discovery never runs). Several sessions can open at once on a cold server: each run
    decides for itself (a process-wide flag let the second session skip setup, so its widgets fell to their minimums:
    the load test's hung sessions)."""
    if not getattr(_RUN, "setup", False):  # the page is the main script, outside app.py's boundary (run):
        safe.guard(setup, "the sidebar")  # so it runs itself once more inside one, and this outer run ends here
        page_file = sys._getframe(1).f_code.co_filename
        safe.guard(lambda: runpy.run_path(page_file, run_name="__main__"), "this page")
        st.stop()
    _RUN.setup = False
    return active()


_RUN = threading.local()  # per script thread (one per session): did setup() run in the current run?


# Contrast (WCAG AA, measured by tests/contrast.py): Streamlit draws captions at about 3.9:1 and a disabled control's
# text at 2.3:1, an icon button (the healing text's 'add' once a file is chosen) 3.8:1; these make them 5:1 or more
# and about 4:1 (a disabled label needs 3:1 at least). Tabs wrap onto a
# second row rather than scroll out of sight (a 390 px phone showed 4 of Learn's 10); the comparison by the screen's
# width (ui/compare.py).
STYLE = """<style>
[data-testid="stCaptionContainer"] { color: #67635d !important; opacity: 1 !important; }
.stElementContainer:has(input:disabled, button:disabled, textarea:disabled, [aria-disabled="true"])
  :is(p, span, label, div[data-testid]):not(button:enabled *) { color: rgba(47, 45, 43, 0.62) !important; }
button:enabled[data-testid="stBaseButton-borderlessIcon"] * { color: #57534e !important; }
[data-testid="stTabs"] [role="tablist"] { flex-wrap: wrap; overflow-x: visible; row-gap: 0.25rem; }
""" + compare.NARROW + """
</style>"""


def setup():
    """What app.py does before routing: session state, keep-alive of widget values, the style, the sidebar."""
    _RUN.setup = True
    st.html(STYLE)
    init_state()
    for k in list(st.session_state):  # keep widget values alive while their page is not shown
        if k.startswith(KEY) or k in ("model_choice", MINUTES):
            st.session_state[k] = st.session_state[k]
    sidebar()
    if st.session_state.get("url_error"):  # the link's own text inside: plain, never markdown
        st.warning(safe.plain(st.session_state.url_error))
    gone = st.session_state.get("url_upload")
    if gone and st.session_state.get("active", ("bundled",))[0] == "bundled":
        st.warning(f"This page was on an uploaded model, {safe.plain(gone)}, which stays only in the browser session "
                   f"that loaded it: after a reload (or in a shared link) it is gone, so this shows "
                   f"{active().name} instead. Upload it again in the sidebar to go on with the link's recipe.")
    elif gone:
        st.session_state.url_upload = None  # uploaded again


def run(nav) -> None:
    """The page, through the one boundary every page runs behind (safe.guard): an exception that is not the
    library's is one line and a log entry, not a broken page on every rerun."""
    try:
        safe.guard(nav.run, f"the {nav.title} page")
    finally:  # (st.stop passes through) a Cancel's mark holds for the run its click caused, no later one
        st.session_state.pop("cancelled", None)


MAX_LOADED = 2  # uploaded / local models kept per session (each is a whole model); the oldest goes first


def _try_load(kind: str, key: str, load):
    """Load into this session; on any bad input show the library's message and keep the current model."""
    try:
        with st.spinner("Loading and checking the model..."):
            loaded = st.session_state.loaded
            got = jobs.run("load", lambda job: load(), f"loading {key}", key=key, failure="raise")  # on the queue
            if got is None:  # cancelled (said in one line): the model that was active stays
                return
            loaded[key] = got
            while len(loaded) > MAX_LOADED:
                loaded.pop(next(iter(loaded)))
        st.session_state.active = (kind, key)
        st.session_state.load_error = None
        st.session_state.pop("uploaded", None)  # a compressed upload's message and comparison belong to it alone
    except C.CompressError as e:
        st.session_state.load_error = str(e)


def _public(bundle, name: str):
    """The upload under its file name: the library names it by the temp path it was loaded from, which every
    visitor would read in histories and reports."""
    looks_bundled = name.lower() in C.BUNDLED or not name.isascii()  # (a Cyrillic і makes "mіnilm" read as minilm)
    name = f"upload-{name}" if looks_bundled else name  # never taken for a bundled model
    return dataclasses.replace(bundle, name=name, info={**bundle.info, "source": f"an upload ({name})"})


@safe.guarded("the sidebar's upload")
def _upload_changed():
    """The upload written to disk in 1 MB chunks (shutil.copyfileobj), to be loaded from there by the sidebar's run
    (_load_staged: with the queue's Cancel and place in line, which a callback cannot show). Streamlit itself holds
    the uploaded bytes in memory once, in its upload manager, for as long as the file stays in the widget (its
    server reads a request body whole); nothing here copies them again: no getvalue(), no bytes kept past this call."""
    f, old = st.session_state.upload, st.session_state.pop("staged", None)
    if old is not None:
        old[0].cleanup()
    if f is None:
        return
    name, d = safe.file_name(f.name), tempfile.TemporaryDirectory(prefix="compress-sidebar-")
    path = Path(d.name) / name  # (the folder goes when the load ends, or with the session: the object's finalizer)
    f.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    st.session_state.staged = (d, path, name)


def _load_staged():
    """The staged upload loaded, waited for here with a Cancel; a run a click ends mid-load leaves it staged, and the
    next run waits for the same job again. Its folder is removed once the load has ended, however it ended."""
    d, path, name = st.session_state.staged
    try:
        _load_file(path, name)
    except C.CompressError as e:  # (is_compressed reading a bad zip)
        st.session_state.load_error = str(e)
    except Exception:  # the sidebar's boundary says it in one line; unstaged, so not retried on every run
        st.session_state.pop("staged", None)
        d.cleanup()
        raise
    st.session_state.pop("staged", None)  # (a Streamlit rerun mid-load passes through: the job is still reading)
    d.cleanup()


def _load_file(path: Path, name: str):
    dtype = st.session_state.get("upload_dtype", C.DTYPES[0])
    with open(path, "rb") as fh:
        key = f"upload:{hashlib.file_digest(fh, 'sha256').hexdigest()[:16]}" + ("" if dtype == "float32" else ":kept")
    if key in st.session_state.loaded:
        st.session_state.active = ("upload", key)
    elif C.is_compressed(path):
        _open_compressed(path, name)
    else:
        _try_load("upload", key, lambda: _public(C.load_upload(path, dtype), name))


def _open_compressed(path: Path, name: str):
    """A compressed model of this app uploaded back: its original becomes the active model, its recipe the controls',
    and the Compress page compares the uploaded model itself (not a rebuild) with the original."""
    loaded = st.session_state.loaded
    try:
        with st.spinner("Rebuilding the compressed model on its original..."):
            comp = jobs.run("load", lambda job: C.load_compressed(path, list(loaded.values())), f"loading {name}",
                            key=str(path), failure="raise")
    except C.CompressError as e:
        st.session_state.load_error = str(e)
        return
    if comp is None:  # cancelled
        return
    mine = next((k for k, m in loaded.items() if m.content_hash == comp.content_hash), None)
    st.session_state.active = ("upload", mine) if mine else ("bundled", comp.name)
    if mine is None:
        st.session_state.model_choice = comp.name
    set_recipe(comp.recipe)
    key = (cached.model_key(comp), comp.recipe.to_json())  # the original's key: the comparison uses this model
    cached.keep_healed(key, comp)
    st.session_state.uploaded = {"key": key, "file": name, "card": comp.info["card"]}
    st.session_state.auto_apply, st.session_state.load_error = True, None


def upload_limit() -> tuple[int, str]:
    """(the library's upload limit in MB, its words): COMPRESS_MAX_UPLOAD_MB, made the server's limit too. Streamlit's
    server reads server.maxUploadSize on every upload request, so the one variable sets what the server takes, what
    the uploader offers and what the library checks (a lower server limit would refuse uploads the library takes)."""
    try:
        mb, params = C.max_upload_mb(), C.max_params()
    except C.CompressError as e:  # a bad value of the operator's variable: the defaults, and say so
        st.warning(safe.plain(e))
        mb, params = C.MAX_UPLOAD_BYTES >> 20, C.MAX_PARAMS
    if st.get_option("server.maxUploadSize") != mb:
        from streamlit import config
        config.set_option("server.maxUploadSize", mb, where_defined="COMPRESS_MAX_UPLOAD_MB")
    return mb, f"at most {mb:,} MB ({mb / 1024:.2g} GB) and {params / 1e9:g}B parameters"  # (the box rounds: "3GB")


def sidebar():
    with st.sidebar:
        st.header("Model")
        mb, limits = upload_limit()  # on every run: the server's limit is set before any upload can reach it
        root = C.local_root()  # folders on this machine: only when the server's operator opted in (README)
        source = st.radio("Source", ["Bundled", "Upload a zip"] + (["Local folder"] if root else []), horizontal=True,
                          key="model_source")
        if source == "Bundled":
            choice = st.selectbox("Bundled model", list(C.BUNDLED), key="model_choice")
            st.session_state.active = ("bundled", choice)
        elif source == "Upload a zip":
            st.radio("bf16 / fp16 weights", C.DTYPES, key="upload_dtype", horizontal=True,
                     format_func=lambda d: {"float32": "widen to float32", "keep": "keep as stored"}[d],
                     help="Widen (the default): every technique and measure runs on float32, twice the memory of "
                          "bf16. Keep: the original stays in bf16/fp16 (half the memory); an Apply widens its own "
                          "copy. The Model page and card.json say which.")
            # no type=["zip"]: Streamlit's own check of it raised on every rerun for a name with a NUL (a crafted
            # request); the library reads the bytes as a zip or refuses them in one line, whatever the name says
            st.file_uploader(f"Hugging Face model folder as .zip (config.json + *.safetensors), or a compressed "
                             f"model downloaded from this app; {limits}", key="upload", max_upload_size=mb,
                             on_change=_upload_changed)
            if st.session_state.get("staged"):
                _load_staged()
        else:
            path = st.text_input("Folder inside the server's model folder (COMPRESS_LOCAL_ROOT)", key="local_path",
                                 max_chars=300)  # the folder itself is the operator's: not shown to visitors
            if (st.button("Load folder") or jobs.waiting("load", "local:" + path)) and path:  # (a rerun mid-load
                #  waits again; a path changed meanwhile cancels it)
                _try_load("local", "local:" + path, lambda: _public(C.load_local(path), safe.file_name(path)))
        if st.session_state.get("load_error"):
            st.error(f"Could not load that model: {safe.plain(st.session_state.load_error)}")
        elif st.session_state.get("uploaded") and source == "Upload a zip":
            st.success("A compressed model was uploaded: its original is active and the Compress page compares "
                       "the two.")
        bundle = active()
        st.caption(f"Active: **{bundle.name}** ({bundle.info['architecture']}, {bundle.task})")
