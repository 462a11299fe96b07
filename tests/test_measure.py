import io
import os
import threading
import time

import pytest
import torch

import compress as C


def test_size_bytes_is_the_torch_save_length(tiny_bert, tmp_path):
    for model in (tiny_bert.model, C.compress(tiny_bert, C.Recipe(quant="int8")).model):
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        assert C.size_bytes(model) == len(buf.getvalue())
        # on disk too (torch.save names the zip records after the file stem; BytesIO's is "archive")
        torch.save(model.state_dict(), tmp_path / "archive.pt")
        assert C.size_bytes(model) == (tmp_path / "archive.pt").stat().st_size


def test_breakdown_covers_the_groups(tiny_bert):
    parts = C.size_breakdown(tiny_bert.model, tiny_bert.adapter)
    assert parts["embeddings"] > parts["blocks"] > 0  # the 30k-token table dominates a tiny model
    assert sum(parts.values()) == pytest.approx(C.size_bytes(tiny_bert.model), rel=0.02)


def test_a_head_tied_to_the_word_table_is_counted_once_under_embeddings():
    """TinyLlama's (and GPT-2's) LM head is the word table: each group serialized on its own counted it again under
    rest (a newcomer added its parts to 13.2 MB of 12.1); after int8 the table reads the head's rows."""
    b = C.load_model("tinyllama")
    for model in (b.model, C.compress(b, C.Recipe(quant="int8")).model):
        parts = C.size_breakdown(model, b.adapter)
        assert sum(parts.values()) == pytest.approx(C.size_bytes(model), rel=0.02), parts
        assert parts["embeddings"] > 10 * parts["rest"], parts  # the head's weights are the table's


def test_params_count_weights_also_when_quantized(tiny_bert):
    n = sum(p.numel() for p in tiny_bert.model.parameters())
    assert C.count_params(tiny_bert.model) == n
    assert C.count_params(C.compress(tiny_bert, C.Recipe(quant="int8")).model) == n


def test_a_module_that_stores_packed_weights_declares_its_params_and_the_bytes_are_its_buffers():
    """measure knows no technique: any module with stored_params() is counted by what it declares (not its uint8
    bytes), and its size is what torch.save writes of its buffers, like any other."""
    class Nibbles(torch.nn.Module):  # 300 weights at 4 bits: 150 bytes
        def __init__(self):
            super().__init__()
            self.register_buffer("packed", torch.zeros(150, dtype=torch.uint8))

        def stored_params(self) -> int:
            return 300
    model = torch.nn.Sequential(torch.nn.Linear(4, 2), Nibbles())
    assert C.count_params(model) == 4 * 2 + 2 + 300
    plain = torch.nn.Sequential(torch.nn.Linear(4, 2))
    plain.register_buffer("packed", torch.zeros(150, dtype=torch.uint8))  # the same bytes, no declaration
    assert C.count_params(plain) == 4 * 2 + 2
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    assert C.size_bytes(model) == len(buf.getvalue())


def test_latency_percentiles_interleaved_and_ordered():
    calls = []
    lat = C.latency({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, runs=7, warmup=2)
    assert calls == ["a", "b"] * 9  # interleaved A, B, A, B: noise hits both alike
    for v in lat.values():
        assert v["runs"] == 7 and v["p10"] <= v["p50"] <= v["p90"]
    with pytest.raises(ValueError):
        C.latency({"a": lambda: None}, runs=3)


def test_two_benchmarks_never_overlap():
    active, overlaps = [0], []

    def work():
        active[0] += 1
        overlaps.append(active[0])
        time.sleep(0.001)
        active[0] -= 1
    threads = [threading.Thread(target=C.latency, args=({"x": work},)) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(overlaps) == 27 and max(overlaps) == 1


def test_hardware_info():
    info = C.cpu_info()
    assert info["threads"] == torch.get_num_threads() and isinstance(info["flags"], list) and info["cpu"]
    assert (C.gpu_info() is None) == (not torch.cuda.is_available())


def test_timings_of_two_processes_never_overlap(monkeypatch):
    """A sweep runs in its own process next to the app: a timing waits for the other process's, then says so."""
    import subprocess
    import sys
    import tempfile
    from compress.measure import core as measure
    path = f"{tempfile.gettempdir()}/compress-bench.lock"
    holder = subprocess.Popen([sys.executable, "-c", f"import fcntl, time; f = open({path!r}, 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(measure, "LOCK_WAIT_S", 0.5)
        with pytest.raises(C.CompressError, match="another benchmark"):  # this process's lock is free: the
            measure.latency({"a": lambda: None}, runs=7)                # other process's file lock held it
    finally:
        holder.kill()
        holder.wait()
    assert measure.latency({"a": lambda: None}, runs=7)["a"]["runs"] == 7  # free again


def test_others_busy_is_the_share_of_all_cpus_other_processes_used(monkeypatch):
    from compress.measure import core as measure
    monkeypatch.setattr(measure.os, "cpu_count", lambda: 2)
    assert measure.others_busy((0.0, 10.0, 1.0), (1.0, 12.0, 1.5)) == 0.75  # 2 busy CPU-s, 0.5 of them ours
    assert measure.others_busy((0.0, 10.0, 1.0), (1.0, 10.5, 1.5)) == 0.0
    assert measure.others_busy((0.0, float("nan"), 0.0), (1.0, float("nan"), 0.0)) is None


def test_a_timing_that_other_processes_overlap_says_so():
    import subprocess
    import sys
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)
        lat = C.latency({"a": lambda: time.sleep(0.02), "b": lambda: time.sleep(0.02)})
    finally:
        for h in hogs:
            h.kill()
    assert lat["a"]["others_busy"] > C.BUSY and lat["a"]["others_busy"] == lat["b"]["others_busy"]


def _fake_snapshots(monkeypatch, busy_rounds, round_s=0.1):
    """/proc/stat as if other processes took both CPUs during the rounds in busy_rounds (counted from 1, warm-up
    rounds included): every round round_s long."""
    from compress.measure import core as measure
    monkeypatch.setattr(measure.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(measure, "ROUND_BUSY", 0.1)  # the default (make test's workers run with COMPRESS_RETIME=0)
    state = {"n": 0, "busy": 0.0}

    def snap():
        state["n"] += 1
        if state["n"] % 2 == 0 and state["n"] // 2 in busy_rounds:
            state["busy"] += 2 * round_s  # both CPUs
        return state["n"] * round_s, state["busy"], 0.0
    monkeypatch.setattr(measure, "_cpu_snapshot", snap)


def test_a_round_other_processes_overlap_is_dropped_and_timed_again(monkeypatch):
    from compress.measure import core as measure
    _fake_snapshots(monkeypatch, {3, 4})
    kept, calls = [], []
    lat = measure.latency({"a": lambda: calls.append(1), "b": lambda: None}, runs=7, kept=kept)
    assert lat["a"]["runs"] == lat["b"]["runs"] == 7 and lat["a"]["dropped"] == 2 and lat["a"]["others_busy"] == 0.0
    assert kept == [4, 5, 6, 7, 8, 9, 10] and len(calls) == 11  # 2 warm-up + 2 dropped + 7 kept


def test_when_every_round_is_overlapped_it_stops_retrying_and_says_so(monkeypatch):
    from compress.measure import core as measure
    _fake_snapshots(monkeypatch, set(range(100)))
    lat = measure.latency({"a": lambda: None}, runs=7)
    assert lat["a"]["dropped"] == 14 and lat["a"]["runs"] == 7 and lat["a"]["others_busy"] == 1.0 > C.BUSY


def test_short_rounds_are_judged_in_blocks_long_enough_for_proc_stat(monkeypatch):
    from compress.measure import core as measure
    _fake_snapshots(monkeypatch, {5}, round_s=0.02)  # 3 rounds (0.06 s) make a block: rounds 3-5 the first
    kept = []
    lat = measure.latency({"a": lambda: None}, runs=7, kept=kept)
    assert lat["a"]["dropped"] == 3 and lat["a"]["runs"] == 7 and lat["a"]["others_busy"] == 0.0
    assert kept == [5, 6, 7, 8, 9, 10, 11]  # rounds 3-5 (indices 2-4) were one overlapped block, timed again


def test_sizes_report_their_progress_and_hold_no_serialized_copy(tiny_bert):
    seen = []
    n = C.numbers(tiny_bert, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 3 and seen[0] < 0.5  # both serializations
    assert n["size_bytes"] == C.size_bytes(tiny_bert.model) and set(n["size_breakdown"]) == {"embeddings", "blocks",
                                                                                            "rest"}
    from compress.serve import membound
    assert membound.FACTOR["sizes"] == 1  # the model alone: its bytes are counted as written (measure/core.py)


def test_spectra_report_their_progress_a_layer_at_a_time(tiny_bert):
    from compress.techniques.spectrum import compute_spectra
    seen = []
    spec = compute_spectra(tiny_bert.model, tiny_bert.adapter, seen.append)
    assert seen == [i / len(spec) for i in range(len(spec))]  # before each layer's SVD: the job shows where it is
