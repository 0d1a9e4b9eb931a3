"""The generator's engine: reader -> worker (backend) -> writer, overlapped, in order, failures per video."""

import threading
import time

import pytest

from regdpo import format as fmt
from regdpo.backends.classical import ClassicalBackend
from regdpo.generate import pipeline
from regdpo.generate.config import GenerateConfig
from regdpo.generate.engine import LocalEngine
from regdpo.generate.pipeline import run_generation
from regdpo.generate.sources import discover_sources
from helpers import DATA, needs_data


class RecordingStages:
    """Stages over integers that record which thread ran what, and when."""

    def __init__(self, fail_finish=None, interrupt_at=None):
        self.events = []
        self.lock = threading.Lock()
        self.fail_finish, self.interrupt_at = fail_finish, interrupt_at

    def _note(self, stage, item):
        with self.lock:
            self.events.append((stage, item, threading.current_thread().name, time.perf_counter()))

    def prepare(self, item):
        self._note("prepare", item)
        return item

    def compute(self, item, backend):
        if item == self.interrupt_at:
            raise KeyboardInterrupt
        time.sleep(0.05)
        self._note("compute", item)
        return item

    def finish(self, item):
        if item == self.fail_finish:
            raise OSError("no space left (run-level)")
        time.sleep(0.05)
        self._note("finish", item)
        return f"outcome-{item}"


def test_outcomes_in_order_backend_on_calling_thread_and_writer_overlapped():
    stages, outcomes = RecordingStages(), []
    LocalEngine(backend=None).run(stages, list(range(6)), outcomes.append)
    assert outcomes == [f"outcome-{i}" for i in range(6)]
    threads = {stage: {t for s, _, t, _ in stages.events if s == stage} for stage in ("prepare", "compute", "finish")}
    assert threads["compute"] == {threading.current_thread().name}
    assert threads["prepare"] == {"regdpo-reader"} and threads["finish"] == {"regdpo-writer"}
    when = {(s, i): t for s, i, _, t in stages.events}
    # video k is written while k+1 is computed: k+1's compute ends before k's write has ended + one more step
    assert any(when[("compute", k + 1)] < when[("finish", k)] + 0.04 for k in range(5))


def test_serial_engine_gives_the_same_outcomes():
    outcomes = []
    LocalEngine(backend=None, overlap=False).run(RecordingStages(), list(range(4)), outcomes.append)
    assert outcomes == [f"outcome-{i}" for i in range(4)]


def test_run_level_writer_error_stops_the_run_and_is_raised():
    stages, outcomes = RecordingStages(fail_finish=2), []
    with pytest.raises(OSError, match="run-level"):
        LocalEngine(backend=None).run(stages, list(range(50)), outcomes.append)
    assert outcomes == ["outcome-0", "outcome-1"]
    assert max(i for s, i, _, _ in stages.events if s == "compute") < 6  # stopped soon, did not run on


def test_ctrl_c_in_the_backend_still_writes_what_is_computed():
    stages, outcomes = RecordingStages(interrupt_at=3), []
    with pytest.raises(KeyboardInterrupt):
        LocalEngine(backend=None).run(stages, list(range(50)), outcomes.append)
    assert outcomes == ["outcome-0", "outcome-1", "outcome-2"]
    assert not [e for e in stages.events if e[1] > 4]  # the reader stopped one ahead


def _config(out, **kw):
    config = GenerateConfig(output_dir=out, nframes=8, resolution=64, seed=5, progress=False, **kw)
    config.check()
    return config


@needs_data
def test_a_failing_write_is_one_failed_video(tmp_path, monkeypatch):
    sources = discover_sources(DATA / "DAVIS", None, DATA / "YTBV", "train", None, 30.0)[:3]
    victim = sources[1].name
    real_write = pipeline.write_video

    def flaky_write(computed, config):
        if computed.meta.name == victim:
            raise OSError(f"disk trouble writing {victim}")
        return real_write(computed, config)

    monkeypatch.setattr(pipeline, "write_video", flaky_write)
    config = _config(tmp_path / "dpo")
    summary = run_generation(config, ClassicalBackend(config.flicker_segments), sources, log=lambda m: None)
    assert [(o.name, o.status) for o in summary.outcomes] == [
        (sources[0].name, "written"), (victim, "failed"), (sources[2].name, "written")]
    assert "disk trouble" in fmt.read_json(config.output_dir / fmt.FAILED_DIR / f"{victim}.json")["reason"]
    assert not (config.output_dir / victim).exists() and not (config.output_dir / fmt.STAGING_DIR).exists()
    assert summary.manifest.to_dict()["num_videos"] == 2


@needs_data
def test_overlapped_and_serial_runs_write_the_same_bytes(tmp_path):
    sources = discover_sources(DATA / "DAVIS", None, DATA / "YTBV", "train", None, 30.0)
    files = []
    for overlap in (True, False):
        config = _config(tmp_path / f"o{overlap}")
        backend = ClassicalBackend(config.flicker_segments)
        run_generation(config, backend, sources, log=lambda m: None, engine=LocalEngine(backend, overlap=overlap))
        out = {}
        for p in sorted(config.output_dir.rglob("*")):
            if p.is_file() and not p.name.startswith(fmt.LOCK_FILE):
                data = p.read_bytes() if p.name != fmt.META_FILE else fmt.read_json(p) | {"timings": None}
                out[p.relative_to(config.output_dir).as_posix()] = data
        files.append(out)
    assert files[0] == files[1] and len(files[0]) > 100
