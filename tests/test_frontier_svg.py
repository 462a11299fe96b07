"""README's frontier figure (compress/outputs/frontier_svg.py): the committed SVG is the committed CSV's, every point
drawn once per evaluation set, the frontier joins only undominated points, a bad CSV is one clean error."""
import subprocess
import sys

import pytest

import compress as C
from compress.outputs import frontier_svg as F
from conftest import ROOT


def test_the_committed_figure_is_drawn_from_the_committed_points():
    rows = F.read(ROOT / "assets" / "frontier.csv")
    assert (ROOT / "assets" / "frontier.svg").read_text() == F.svg(rows, F.TITLE), \
        "assets/frontier.svg is stale: run `python -m compress frontier`"
    assert "assets/frontier.svg" in (ROOT / "README.md").read_text()
    heads = [h.lstrip("#").strip() for h in (ROOT / "BENCHMARKS.md").read_text().splitlines() if h.startswith("#")]
    for r in rows:  # each point's section is one of BENCHMARKS.md's, whole (an unquoted comma had cut two in
        # half: their rest was an extra column, under None)
        assert None not in r and any(h.startswith(r["benchmarks_section"]) for h in heads), r


def test_each_point_is_drawn_once_per_set_with_its_label(tmp_path):
    rows = [{"label": "a <b>", "size_mb": 2.0, "fidelity": 0.6, "fidelity_docs": 0.7},
            {"label": "c", "size_mb": 9.0, "fidelity": 0.9, "fidelity_docs": 0.85}]
    out = F.svg(rows, "t")
    assert out.count("<circle") == len(rows) + 1 and out.count("<polygon") == len(rows) + 1  # + the legend's
    assert "a &lt;b&gt;" in out and "<b>" not in out  # labels escaped
    assert out == F.svg(rows, "t")  # deterministic
    assert "<tspan font-weight=\"bold\">1</tspan> a &lt;b&gt;" in out and "</tspan> c</text>" in out  # the key: by size
    assert 'fill="white" stroke=' not in out  # no heal_steps column: none drawn as not healed
    rows[1]["heal_steps"] = "0"
    hollow = F.svg(rows, "t")
    assert hollow.count('fill="white" stroke=') == 2 and "c (not healed)" in hollow  # its two markers, its key line


def test_the_frontier_keeps_only_points_no_other_beats():
    pts = [(2, 0.6), (4.5, 0.8), (6, 0.7), (9, 0.9), (12, 0.87), (23, 0.99), (4.5, 0.75)]
    assert F.pareto(pts) == [(2, 0.6), (4.5, 0.8), (9, 0.9), (23, 0.99)]


@pytest.mark.parametrize("text, says", [("label,size_mb,fidelity\nx,2,0.5\n", "could not be read"),
                                        ("label,size_mb,fidelity,fidelity_docs\nx,two,0.5,0.5\n", "could not be read"),
                                        ("label,size_mb,fidelity,fidelity_docs\nx,500,0.5,0.5\n", "between 1 and 100"),
                                        ("label,size_mb,fidelity,fidelity_docs\n", "at least one point")])
def test_a_bad_csv_is_one_clean_error(tmp_path, text, says):
    (tmp_path / "f.csv").write_text(text)
    with pytest.raises(C.CompressError, match=says):
        F.read(tmp_path / "f.csv")


@pytest.mark.parametrize("csv, out", [("label,size_mb\nx,2\n", "f.svg"),
                                      ("label,size_mb,fidelity,fidelity_docs\nx,2,0.5,0.5\n", "no/such/dir/f.svg")])
def test_the_cli_says_a_bad_csv_or_place_in_one_line(tmp_path, csv, out):
    (tmp_path / "f.csv").write_text(csv)
    p = subprocess.run([sys.executable, "-m", "compress", "frontier", "--csv", str(tmp_path / "f.csv"), "--out",
                        str(tmp_path / out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr
    assert not (tmp_path / out).exists()
