"""bench/machine.py: the load line the bench scripts print with their figures."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from machine import MachineLoad  # noqa: E402


def test_load_line_reports_date_cores_and_cpu_shares():
    with MachineLoad() as load:
        sum(i * i for i in range(300_000))
    line = load.summary()
    assert line.startswith("measured 20") and "UTC on" in line and "load average (1 min)" in line
    assert "this benchmark" in line
