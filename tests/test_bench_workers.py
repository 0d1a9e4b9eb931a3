"""bench/bench_workers.py (smoke): one and two `regdpo launch` workers give the same bytes; the JSON's fields.

Also the launcher with a single worker (`--gpus 0`) on a fresh folder: it makes `_logs/` there first, so
its worker must continue the folder (it once refused it as not empty). No timing is asserted."""

import json
import sys
from pathlib import Path

from helpers import needs_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_workers  # noqa: E402


@needs_data
def test_one_and_two_workers_write_the_same_bytes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_workers.os, "cpu_count", lambda: 2)  # --workers is capped at the CPUs
    out = tmp_path / "workers.json"
    assert bench_workers.main(["--workers", "1", "2", "--masks_per_clip", "1", "--resolution", "64",
                               "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["threads_per_worker"] == 1 and results["backend"] == "classical"
    rows = results["rows"]
    assert [r["workers"] for r in rows] == [1, 2]
    assert all(r["exit"] == 0 and r["videos"] == 5 and r["identical"] for r in rows), rows
    assert rows[0]["speedup"] == 1.0
    assert all(r["wall"] > 0 and r["videos_per_s"] > 0 and r["cores_used"] > 0 for r in rows)
    assert "load average" in results["machine"]
    printed = capsys.readouterr().out
    assert "speed-up" in printed and printed.count(" yes") == 2


def test_digest_ignores_logs_locks_and_timings_only(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "_logs").mkdir()
    (tmp_path / "_logs" / "worker-0.log").write_text("x")
    (tmp_path / "v" / "meta.json").write_text(json.dumps({"name": "v", "timings": {"write": 1.0}}))
    (tmp_path / "v" / "gt.png").write_bytes(b"png")
    before = bench_workers.output_digest(tmp_path)
    assert sorted(before) == ["v/gt.png", "v/meta.json"]
    (tmp_path / "_logs" / "worker-0.log").write_text("y")
    (tmp_path / "v" / "meta.json").write_text(json.dumps({"timings": {"write": 2.0}, "name": "v"}))
    assert bench_workers.output_digest(tmp_path) == before
    (tmp_path / "v" / "gt.png").write_bytes(b"png2")
    assert bench_workers.output_digest(tmp_path) != before
