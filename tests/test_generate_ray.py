"""`--engine ray`: two fake-GPU actors give the bytes of a local run; a killed actor loses nothing.

Skipped when Ray is not installed (CI installs only `.[dev]`; `pip install -e '.[ray]'` runs them).
"""

import functools
import os
import signal
from pathlib import Path

import pytest

from regdpo.backends.classical import ClassicalBackend
from regdpo.cli import main as regdpo_main
from regdpo.errors import UsageError
from regdpo.generate import ray_engine
from regdpo.generate.config import GenerateConfig
from regdpo.generate.pipeline import run_generation
from regdpo.generate.sources import discover_sources
from helpers import DATA, needs_data
from test_generate_shards import flags, output_files

SRC = Path(ray_engine.__file__).resolve().parents[2]
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def fake_gpu_cluster():
    """A local Ray with two fake GPUs on this CPU machine (actors ask for 0.5 CPU each)."""
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(SRC)}},  # the actors import this checkout's regdpo
             # a loaded 2-core machine (load 25 seen) delays the raylet's heartbeats: Ray would declare its own
             # node dead and end the test; a local test cluster can wait
             _system_config={"health_check_failure_threshold": 60, "health_check_timeout_ms": 30000})
    yield
    ray.shutdown()


def test_ray_flags_need_engine_ray(capsys, tmp_path):
    assert regdpo_main(["generate", "--output_dir", str(tmp_path / "o"), "--workers", "2"]) == 2
    assert "--workers is a setting of --engine ray" in capsys.readouterr().err
    assert regdpo_main(["generate", "--output_dir", str(tmp_path / "o"), "--engine", "ray", "--gpus_per_worker",
                        "-1"]) == 2
    assert "--gpus_per_worker must be a number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_ray_is_a_usage_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UsageError, match=r"pip install -e '\.\[ray\]'"):
        ray_engine.import_ray()


@needs_data
def test_two_fake_gpu_actors_give_the_bytes_of_a_local_run(tmp_path, fake_gpu_cluster):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert regdpo_main(["generate", *flags(local)]) == 0
    assert regdpo_main(["generate", *flags(on_ray), "--engine", "ray", "--workers", "2",
                        "--gpus_per_worker", "1"]) == 0
    assert output_files(on_ray) == output_files(local)
    assert len([p for p in on_ray.iterdir() if (p / "meta.json").is_file()]) == 5


@needs_data
def test_a_killed_actor_loses_nothing(tmp_path, fake_gpu_cluster):
    videos = tmp_path / "videos"
    for k in range(8):  # eight sources (hard links of one DAVIS sequence): work in flight when the kill comes
        folder = videos / f"clip{k}"
        folder.mkdir(parents=True)
        for frame in sorted((DATA / "DAVIS" / "JPEGImages" / "480p" / "tennis").iterdir())[:24]:
            os.link(frame, folder / frame.name)
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert regdpo_main(["generate", "--video_root", str(videos), "--nframes", "10", "--resolution", "96", "--seed",
                        "5", "--no_progress", "--output_dir", str(local)]) == 0

    config = GenerateConfig(output_dir=on_ray, video_root=videos, nframes=10, resolution=96, seed=5, progress=False)
    sources = discover_sources(None, None, None, "train", videos, 30.0)
    engine = ray_engine.RayEngine(functools.partial(ClassicalBackend, flicker_segments=3), workers=2,
                                  gpus_per_worker=1.0, log=lambda line: None)
    killed = []

    def run_with_kill(stages, srcs, on_outcome):
        def on_first(outcome):  # at the first outcome with both pids known, both actors' processes are killed
            if not killed and None not in engine.pids:
                for pid in engine.pids:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            on_outcome(outcome)

        return original_run(stages, srcs, on_first)

    original_run = engine.run
    engine.run = run_with_kill
    try:
        summary = run_generation(config, None, sources, engine=engine)
    finally:
        engine.close()
    assert len(killed) == 2
    assert engine.deaths >= 1  # videos were in flight on the killed actors, and were given out again
    # a video the killed actor committed before it could report is found complete when given out again:
    # still "written" (this run made it), never "already done"
    assert [o.status for o in summary.outcomes] == ["written"] * 8
    assert output_files(on_ray) == output_files(local)  # the killed actors' half-written staging is gone too
