"""The operator's settings (compress/serve/settings.py): every environment variable the library and the app read is
a finite number in its bounds or one clear refusal (none falls back silently, none fails with a traceback, none is
read at import), and nothing outside settings.py parses one on its own."""
import re

import pytest

import compress as C
from compress.models import limits
from compress.serve import jobs as qjobs, membound, store
from compress.sweep import studies
from conftest import ROOT
from ui import jobs

READS = {  # each variable -> what reads it, and the value it gives for "7"
    "COMPRESS_MAX_PARAMS": (limits.max_params, 7), "COMPRESS_MAX_UPLOAD_MB": (limits.max_upload_mb, 7),
    "COMPRESS_MEM_BUDGET_MB": (membound.budget_mb, 7.0), "COMPRESS_MEM_SERVER_MB": (membound.server_mb, 7.0),
    "COMPRESS_HEARTBEAT_S": (store.heartbeat_s, 7.0), "COMPRESS_JOB_MINUTES": (lambda: jobs.limit_s("apply"), 420.0),
    "COMPRESS_SWEEP_MINUTES": (lambda: studies.limits()["COMPRESS_SWEEP_MINUTES"], 7.0),
    "COMPRESS_SWEEPS_PER_SERVER": (lambda: studies.limits()["COMPRESS_SWEEPS_PER_SERVER"], 7.0),
}


@pytest.mark.parametrize("name", sorted(READS))
@pytest.mark.parametrize("bad", ["lots", "0", "-2", "nan", "inf", "1e999"])
def test_a_bad_setting_is_one_line_naming_it(name, bad, monkeypatch):
    monkeypatch.setenv(name, bad)
    with pytest.raises(C.CompressError, match=f"^{name} must be a (whole )?number above 0 and at most [^,]+, got "
                                              f"'{re.escape(bad)}'$"):
        READS[name][0]()


@pytest.mark.parametrize("name", sorted(READS))
def test_a_good_setting_is_read_when_used(name, monkeypatch):
    monkeypatch.setenv(name, " 7 ")
    assert READS[name][0]() == READS[name][1]
    monkeypatch.setenv(name, "")  # empty: the default
    assert READS[name][0]() != READS[name][1]


def test_the_queue_refuses_a_bad_worker_count(monkeypatch):
    monkeypatch.setattr(qjobs, "_QUEUE", None)
    monkeypatch.setenv("COMPRESS_WORKERS", "two")
    with pytest.raises(C.CompressError, match="^COMPRESS_WORKERS must be a whole number above 0 and at most 1e\\+15, "
                                              "got 'two'$"):
        qjobs.queue()


@pytest.mark.parametrize("name", ["COMPRESS_JOB_MINUTES", "COMPRESS_SWEEP_MINUTES", "COMPRESS_HEARTBEAT_S"])
def test_a_time_too_long_for_a_timer_is_refused(name, monkeypatch):
    """A job's time limit is a threading.Timer: 1e9 minutes overflowed the platform's time_t in the timer's thread."""
    monkeypatch.setenv(name, "1e9")
    with pytest.raises(C.CompressError,
                       match=f"^{name} must be a number above 0 and at most (1e\\+06|3600), got '1e9'$"):
        READS[name][0]()


def test_no_setting_is_parsed_outside_settings():
    """int( / float( of an environment variable anywhere else would bring back its own fallback or traceback."""
    found = [f"{p.relative_to(ROOT)}:{i}" for p in [*ROOT.glob("compress/**/*.py"), *ROOT.glob("ui/**/*.py")]
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\b(int|float)\(\s*os\.(environ|getenv)", line)]
    assert not found
