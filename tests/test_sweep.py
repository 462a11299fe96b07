"""Sweeps (compress/sweep/space.py, sweep.py, frontier.py): the space from the technique table, one-line errors, trials
equal to single applies, the frontier, the store's failures (many workers on one study: test_sweep_workers.py)."""
import json
import re
import sqlite3
import time

import pytest

import compress as C
from compress.sweep import space as S
from compress.serve import store
from compress.sweep import run as sweep
from compress.sweep.frontier import frontier, rows

@pytest.fixture(scope="module")
def gpt():
    return C.load_model("tinygpt")


def test_ranges_inclusive_and_rounded():
    assert S.values("rank", "0.1:1.0:0.1") == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert S.values("layers", "1:4:1") == (1, 2, 3, 4)
    assert S.values("heads", "2,4,6") == (2, 4, 6)
    assert S.values("quant", "none,int8") == ("none", "int8")
    assert S.values("emb_bits", "2,4") == (2, 4)
    assert S.fixed("rank_mode=ratio,heads=4,4,2,quant=int8") == {"rank_mode": "ratio", "heads": (4, 4, 2),
                                                                  "quant": "int8"}
    assert S.constraint("size_mb<=9") == ("size_mb", "<=", 9.0)


@pytest.mark.parametrize("call, says", [
    (lambda: S.values("ranks", "0.1:1:0.1"), "unknown field 'ranks'"),
    (lambda: S.values("rank", "0:1:0.1"), "outside the technique table's range"),
    (lambda: S.values("ffn", "0.5:1.5:0.5"), "outside the technique table's range"),
    (lambda: S.values("quant", "int8:int4:1"), "takes a list of values"),
    (lambda: S.values("heads", "2;4"), "heads must be"),
    (lambda: S.values("rank", "1:0.1:0.1"), "needs a <= b"),
    (lambda: S.fixed("rank_mode"), "is not field=value"),
    (lambda: S.constraint("size_mb<9"), "a constraint is metric<=number"),
    (lambda: S.constraint("speed>=3"), "unknown metric 'speed'"),
])
def test_bad_space_is_one_line(call, says):
    with pytest.raises(C.CompressError, match=says) as e:
        call()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("vary, fixed, objectives, says", [
    ({"rank": (0.5, 1.0)}, {}, ("bits_per_char",), "varying rank does nothing here"),
    ({"layers": (1, 2)}, {}, ("fidelity", "size_mb"), "tinygpt has no fidelity"),
    ({"layers": (1, 9)}, {}, ("size_mb",), "layers=9: tinygpt has 4 blocks"),
    ({"layers": (1, 2)}, {}, (), "at least one objective"),
    ({"layers": (1, 2)}, {}, ("latency_ms", "latency_ms"), "listed twice"),
    ({"layers": (1, 2)}, {"layers": 2}, ("size_mb",), "both varied and fixed"),
])
def test_bad_sweep_is_one_line(gpt, vary, fixed, objectives, says):
    with pytest.raises(C.CompressError, match=says):
        S.check(S.Space("tinygpt", vary, objectives, fixed), gpt)


@pytest.mark.parametrize("vary", [{"emb_pq": (8,), "emb_bits": (0, 2)}, {"emb_bits": (2,), "emb_pq": (0, 8)}])
def test_a_refused_value_names_its_own_reason_not_a_pair_the_recipe_refuses(vary):
    """tinyllama ties its table to its head: a product-quantized or low-bit table is refused for that, and a pair of
    table ways (emb_pq with emb_bits, which Recipe itself refuses) among the other values does not hide it."""
    with pytest.raises(C.CompressError, match=r"^--vary emb_(pq=8|bits=2): .*tied weights") as e:
        S.check(S.Space("tinyllama", vary, ("size_mb",)), C.load_model("tinyllama"))
    assert "one way" not in str(e.value)


def test_varying_rank_with_rank_mode_varied_is_fine(gpt):
    S.check(S.Space("tinygpt", {"rank": (0.5,), "rank_mode": ("none", "ratio")}, ("size_mb",)), gpt)


def _url(tmp_path, name="s.sqlite"):
    return f"sqlite:///{tmp_path / name}"


def test_grid_sweep_points_equal_single_applies(tiny_gpt, tmp_path, one_thread):
    """A 1-D rank sweep (a tiny random TinyGPT: the machinery, not the bundled model's numbers): every combination
    once, each point's size exactly and quality within 0.001 of compressing that recipe alone; the frontier is the
    non-dominated points; a rerun of the same sweep adds nothing."""
    space = S.Space("tinygpt", {"rank": S.values("rank", "0.2:1.0:0.4")}, ("bits_per_char", "size_mb"),
                    {"rank_mode": "ratio"})
    lines = []
    out = sweep.run(tiny_gpt, space, "rank", _url(tmp_path), log=lines.append)
    assert out["trials"] == {"complete": 3} and len(lines) == 3
    study = sweep.open_study(None, "rank", _url(tmp_path))
    for t in study.trials:
        recipe = C.Recipe.from_json(t.user_attrs["recipe"])
        comp = C.compress(tiny_gpt, recipe)
        assert t.user_attrs["size_bytes"] == C.size_bytes(comp.model)
        assert abs(t.user_attrs["bits_per_char"] - C.quality(comp, tiny_gpt)["bits_per_char"]) <= 0.001
        assert t.values == [t.user_attrs["bits_per_char"], t.user_attrs["size_mb"]]
        for k in ("recipe", "machine", "versions", "workload", "wall_s", "params", "x_smaller", "next_token_kl"):
            assert k in t.user_attrs
    rs = rows(study)
    done = {r["rank"]: r["factorized"] for r in rs}  # (layers factorized, of): none at rank 1.0, all at 0.2
    assert done[1.0][0] == 0 and done[0.2][0] == done[0.2][1] > 0
    for r in rs:  # a trial that factorizes nothing (1.00x smaller) says why
        assert ("no layer factorized" in r["note"]) == (r["factorized"][0] == 0)
    best = {r["trial"] for r in rs if r["on_frontier"]}
    for r in rs:  # on the frontier iff no other point is at least as good in both and better in one
        beaten = any(o["bits_per_char"] <= r["bits_per_char"] and o["size_mb"] <= r["size_mb"] and
                     (o["bits_per_char"], o["size_mb"]) != (r["bits_per_char"], r["size_mb"]) for o in rs)
        assert (r["trial"] in best) == (not beaten)
    again = sweep.run(tiny_gpt, space, "rank", _url(tmp_path))
    assert again["ran_here"] == 0 and again["trials"] == {"complete": 3}
    from compress.sweep import studies  # listed for this model's weights only: two uploads named alike are two models
    assert studies.names("tinygpt", _url(tmp_path), tiny_gpt.content_hash) == ["rank"]
    assert studies.names("tinygpt", _url(tmp_path), "another model's hash") == []
    from compress.__main__ import main  # the study's one-file report, from the store (nothing measured)
    assert main(["report", "--study", "rank", "--storage", _url(tmp_path), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert html.count('class="plotly-graph-div"') == 1 and "Trade-offs of tinygpt: study rank" in html
    assert f"{len(best)} of them are on the frontier" in html and "rank ratio 0.6" in html
    assert json.loads(study.trials[0].user_attrs["machine"])["cpu"] in html
    low = min((r for r in rs if r["on_frontier"]), key=lambda r: r["bits_per_char"])  # lower is better: named best
    assert f"The best bits per char on the frontier (lower is better) is {low['bits_per_char']:.4f}" in html
    import shlex  # the report's command, pasted, runs this study's space again (quoted, its fixed fields kept)
    from compress.__main__ import _parser
    from compress.sweep.cli import sweep_space
    line = re.search(r"<pre>(python -m compress sweep [^<]*)\n", html)[1].replace("&#x27;", "'")
    a = _parser().parse_args(shlex.split(line)[3:])
    assert a.study == "rank" and a.grid and sweep_space(a).to_json() == space.to_json()
    assert shlex.split(space.cli("tinygpt rank 2026-12-06 10:34:37"))[-1] == "tinygpt rank 2026-12-06 10:34:37"


def test_frontier_respects_directions_and_constraints():
    rs = [{"trial": i, "state": "complete", "feasible": f, "fidelity": q, "size_mb": s}
          for i, (q, s, f) in enumerate([(0.9, 10, True), (0.8, 5, True), (0.7, 6, True), (0.95, 3, False)])]
    assert frontier(rs, ["fidelity", "size_mb"]) == [0, 1]
    assert frontier(rs, ["size_mb"]) == [1]


def test_constrained_sweep_finds_a_feasible_recipe(tiny_gpt, tmp_path, one_thread):
    space = S.Space("tinygpt", {"layers": (1, 2), "ffn": (0.25, 0.5, 0.75, 1.0)}, ("bits_per_char",), {},
                    (("size_mb", "<=", 0.14),))
    out = sweep.run(tiny_gpt, space, "find", _url(tmp_path), trials=5, grid=False, seed=0)
    assert out["trials"]["complete"] == 5
    best = out["frontier"]
    assert best and all(b["size_mb"] <= 0.14 for b in best)
    feasible = [r for r in rows(sweep.open_study(None, "find", _url(tmp_path))) if r["feasible"]]
    assert min(r["bits_per_char"] for r in feasible) == best[0]["bits_per_char"]


def test_more_trials_than_recipes_end_after_each_recipe_once(tiny_gpt, tmp_path, one_thread):
    """Sampled (not a grid) trials over 2 x 2 values asked 9 times: each recipe measured once, then the sweep ends
    (it sampled twins, skipped, without end)."""
    space = S.Space("tinygpt", {"layers": (1, 2), "ffn": (0.5, 1.0)}, ("size_mb",))
    out = sweep.run(tiny_gpt, space, "more", _url(tmp_path), trials=9, grid=False, seed=0)
    done = [r for r in rows(sweep.open_study(None, "more", _url(tmp_path))) if r["state"] == "complete"]
    assert out["trials"]["complete"] == 4 and len({r["recipe"] for r in done}) == 4


def test_store_failures_are_one_line_and_lose_nothing(tiny_gpt, tmp_path):
    space = S.Space("tinygpt", {"layers": (1, 2)}, ("size_mb",))
    bad = tmp_path / "corrupt.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    before = bad.read_bytes()
    for url, says in ((f"sqlite:///{bad}", "cannot be opened"),
                      ("postgresql://nobody@127.0.0.1:1/nothing", "cannot be opened"),
                      ("nosuchdb://x", "cannot be opened")):
        with pytest.raises(C.CompressError, match=says) as e:
            sweep.open_study(space, "s", url)
        assert "\n" not in str(e.value)
    assert bad.read_bytes() == before
    sweep.run(tiny_gpt, space, "mine", _url(tmp_path, "ok.sqlite"))
    other = S.Space("minilm", {"layers": (1, 2)}, ("size_mb",))
    with pytest.raises(C.CompressError, match="is a study of tinygpt, not minilm"):
        sweep.open_study(other, "mine", _url(tmp_path, "ok.sqlite"))
    with pytest.raises(C.CompressError, match="made for another sweep"):
        sweep.open_study(S.Space("tinygpt", {"layers": (1, 3)}, ("size_mb",)), "mine", _url(tmp_path, "ok.sqlite"))
    assert len(sweep.open_study(None, "mine", _url(tmp_path, "ok.sqlite")).trials) == 2


def test_locked_store_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "locked.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE x (a)").connection.commit()
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.2)
    space = S.Space("tinygpt", {"layers": (1, 2)}, ("size_mb",))
    try:
        with pytest.raises(C.CompressError, match="cannot be opened.*locked"):
            store.record_apply("s", "tinygpt", "{}", {}, url=f"sqlite:///{path}")
        with pytest.raises(C.CompressError, match="cannot be opened.*locked"):
            sweep.open_study(space, "s", f"sqlite:///{path}")
    finally:
        holder.rollback()
        holder.close()


def test_a_store_connection_waits_a_bounded_time():
    """libpq waits for a PostgreSQL server that does not answer forever: 10 s here; SQLite for its lock."""
    assert store._connect("postgresql+psycopg2://u@10.255.255.1/db") == {"connect_timeout": 10}
    assert store._connect("sqlite:///x.db") == {"timeout": store.LOCK_WAIT_S}


def test_applies_are_kept_per_session(tmp_path):
    url = _url(tmp_path, "applies.sqlite")
    store.record_apply("session-a", "tinygpt", C.Recipe(layers=2).to_json(), {"size MB": 3.1}, url=url)
    store.record_apply("session-b", "minilm", C.Recipe().to_json(), {"size MB": 90.9}, url=url)
    mine = store.applies("session-a", url=url)
    assert [r["model"] for r in mine] == ["tinygpt"] and mine[0]["size MB"] == 3.1
    assert C.Recipe.from_json(mine[0]["recipe_json"]) == C.Recipe(layers=2)
    assert [r["model"] for r in store.applies(url=url)] == ["minilm", "tinygpt"]
    assert [r["session"] for r in store.applies(url=url, model="tinygpt")] == ["session-"]  # one model's rows
    import sqlalchemy as sa  # a row this code cannot read (another version's): left out, the rest still read
    engine, table = store._table(url, "applies")
    with engine.begin() as db:
        for bad in ("[1]", "null", "{not json"):
            db.execute(table.insert().values(created=0.0, session="x", model="tinygpt", recipe="{}", row=bad))
    assert [r["model"] for r in store.applies(url=url)] == ["minilm", "tinygpt"] and sa


def test_timed_and_healed_trials_keep_both_and_remeasure_the_frontier(tiny_gpt, tmp_path, one_thread):
    """Latency objectives: p10 <= p50 <= p90 and the speedup against the original timed in the same trial; each
    frontier point re-measured once (kept as the study's "remeasured:N"); healing keeps the quality before it too."""
    space = S.Space("tinygpt", {"layers": (1, 2)}, ("bits_per_char", "speedup"), heal_steps=2, batch=2, seq=32)
    out = sweep.run(tiny_gpt, space, "timed", _url(tmp_path))
    study = sweep.open_study(None, "timed", _url(tmp_path))
    assert out["trials"] == {"complete": 2} and out["remeasured"] == len(out["frontier"]) >= 1
    for t in study.trials:
        a = t.user_attrs
        assert a["latency_p10"] <= a["latency_ms"] <= a["latency_p90"]
        assert a["speedup"] == pytest.approx(a["latency_ms_original"] / a["latency_ms"], rel=0.01)
        assert "unhealed_bits_per_char" in a and C.Recipe.from_json(a["recipe"]).heal_steps == 2
    for f in out["frontier"]:
        again = study.user_attrs[f"remeasured:{f['trial']}"]
        assert f["latency_ms"] == again["latency_ms"]  # the summary calls best what was re-measured
    assert sweep.run(tiny_gpt, space, "timed", _url(tmp_path))["remeasured"] == 0  # once per point


def test_a_sweep_on_the_queue_lets_applies_run_between_its_trials_and_outlives_its_tab(tiny_gpt, tmp_path, monkeypatch):
    from compress.serve import jobs
    from compress.sweep import studies
    monkeypatch.setattr(jobs, "GRACE_S", 0.1)  # the owner's tab is gone at once: a sweep still goes on
    monkeypatch.setenv("COMPRESS_STORAGE", _url(tmp_path))
    q = jobs.Queue(1)
    monkeypatch.setattr(jobs, "_QUEUE", q)
    plan = studies.plan(tiny_gpt, {"ffn": "0.25:1.0:0.25"}, "", ["size_mb"])
    assert plan["cli"][:6] == ["python", "-m", "compress", "sweep", "--model", "tiny-gpt"] and plan["grid"] is False
    job = studies.start(tiny_gpt, plan, "queued", owner="tab-1")
    while not job.progress and "queued" not in studies.names(url=_url(tmp_path)):
        time.sleep(0.05)
    apply = q.submit("apply", lambda j: time.time(), owner="tab-2")  # a short job while the sweep runs
    while not (apply.ended.is_set() or job.ended.is_set()):  # whichever ends first (the sweep's own time limit,
        time.sleep(0.05)                                      # COMPRESS_SWEEP_MINUTES, bounds the wait)
    assert apply.state == "done" and not job.ended.is_set()  # it ran between two trials, not after the sweep
    assert q.wait(job) and job.state == "done", job.error
    assert job.result["trials"] == {"complete": 4}
