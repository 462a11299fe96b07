"""A sweep's trial on the Compress page (ui/trial.py): the numbers of its stored row, in the metrics table's order,
written as the page writes them; nothing that is not a measured number."""
import json

import compress as C
from compress.measure import metrics
from ui.trial import numbers


def test_a_trials_row_as_labelled_numbers_in_the_tables_order():
    row = {"trial": 4, "state": "complete", "rank": 0.2, "fidelity": 0.28391, "size_mb": 61.2143,
           "size_bytes": 61214300, "x_smaller": 1.4848, "speedup": 1.21, "latency_ms": 70.5, "feasible": True,
           "on_frontier": True, "workload": "ids 8x32", "recipe": json.dumps(C.Recipe(rank_mode="ratio").to_dict())}
    got = numbers(row)
    assert [label for label, _ in got] == [metrics.label(n) for n in ("fidelity", "size_mb", "x_smaller",
                                                                      "latency_ms", "speedup")]
    assert dict(got) == {metrics.label("fidelity"): "0.2839", "size (MB)": "61.21 MB",
                         metrics.label("x_smaller"): "1.48x", metrics.label("latency_ms"): "70.50 ms",
                         metrics.label("speedup"): "1.21x"}


def test_a_row_without_metrics_has_no_numbers():
    assert numbers({"trial": 0, "state": "fail", "feasible": False, "rank": 0.5}) == []
