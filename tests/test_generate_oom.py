"""Out of GPU memory: a video whose backend call raises a CUDA out-of-memory error is freed and made once more
at the backend's reduced settings (recorded in its meta.json); a second one fails that video only, the run goes
on and ``--resume`` retries it. No other error is retried so. Injected with a fake backend on CPU."""

import weakref

import pytest
import torch

from regdpo import format as fmt
from regdpo.backends.classical import ClassicalBackend
from regdpo.backends.memory import device_oom, oom_summary
from regdpo.backends.models_config import MemoryReduction, ModelsConfig
from regdpo.generate import pipeline
from regdpo.generate.config import GenerateConfig
from regdpo.generate.engine import LocalEngine
from regdpo.generate.pipeline import run_generation
from regdpo.generate.sources import discover_sources
from helpers import DATA, needs_data

OOM_TEXT = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.6 GiB"


class _Held:
    """Something big the failed call holds (a stand-in for its tensors)."""


class FlakyBackend(ClassicalBackend):
    """The classical backend, raising the planned errors on a video's first calls; reducible like the models one."""

    reducible = True

    def __init__(self, segments, plan, peak=None):
        super().__init__(segments)
        self.plan = {name: list(errors) for name, errors in plan.items()}
        self.calls: list[tuple[str, bool]] = []
        self.held: list[weakref.ref] = []
        self.peak = peak

    def generate(self, clip, neg_types, strengths=None, *, reduced=False):
        self.calls.append((clip.name, reduced))
        errors = self.plan.get(clip.name)
        if errors:
            held = _Held()  # referenced by this frame, hence by the error's traceback
            self.held.append(weakref.ref(held))
            raise errors.pop(0)
        result = super().generate(clip, neg_types, strengths)
        if reduced:
            result.reduced = {"window": [8, 4]}
        result.cuda_peak_memory_mb = self.peak
        return result


def _sources():
    return discover_sources(DATA / "DAVIS", None, DATA / "YTBV", "train", None, 30.0)[:3]


def _config(out, **kw):
    config = GenerateConfig(output_dir=out, nframes=8, resolution=64, seed=5, progress=False, **kw)
    config.check()
    return config


def _run(config, backend, sources, overlap=True):
    lines = []
    summary = run_generation(config, backend, sources, log=lines.append, engine=LocalEngine(backend, overlap=overlap))
    return summary, lines


def _oom():
    return torch.cuda.OutOfMemoryError(OOM_TEXT)


def _tree(root):
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith(fmt.LOCK_FILE) and fmt.FAILED_DIR not in p.parts:
            out[p.relative_to(root).as_posix()] = p.read_bytes() if p.name != fmt.META_FILE else fmt.read_json(p)
    return out


# ---------------------------------------------------------------------- what counts as out of memory


def test_only_device_out_of_memory_errors_are_recognised():
    assert device_oom(_oom()) is not None
    assert device_oom(torch.OutOfMemoryError("CUDA out of memory.")) is not None
    assert device_oom(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")) is not None  # torch < 1.13
    wrapped = RuntimeError("the UNet failed")
    wrapped.__cause__ = _oom()  # raise ... from oom
    assert device_oom(wrapped) is wrapped.__cause__
    later = ValueError("bad value")
    later.__context__ = _oom()  # another error while handling one: that other error is the one to report
    for other in (later, MemoryError(), RuntimeError("CUDA error: device-side assert triggered"),
                  RuntimeError("the backend said: CUDA out of memory"), OSError(28, "No space left on device"),
                  ValueError("CUDA out of memory")):
        assert device_oom(other) is None, other
    assert oom_summary(_oom()).startswith("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert len(oom_summary(RuntimeError("CUDA out of memory " + "x" * 1000))) == 240


def test_memory_reduction_turns_the_real_knobs_down_within_their_minimums():
    changes = MemoryReduction().changes(ModelsConfig())
    assert changes == {"propainter_resize_ratio": [0.6, 0.45], "propainter_subvideo_length": [50, 25],
                       "propainter_neighbor_length": [10, 5], "diffueraser_nframes": [22, 11]}
    reduced = MemoryReduction().apply(ModelsConfig())
    assert (reduced.diffueraser_nframes, reduced.propainter_resize_ratio) == (11, 0.45)
    at_minimum = ModelsConfig(diffueraser_nframes=4, propainter_subvideo_length=2, propainter_neighbor_length=3)
    assert MemoryReduction().changes(at_minimum) == {"propainter_resize_ratio": [0.6, 0.45],
                                                      "propainter_neighbor_length": [3, 2]}
    assert MemoryReduction(1.0, 1.0, 1.0, 1.0).changes(ModelsConfig()) == {}
    with pytest.raises(ValueError, match="diffueraser_nframes"):
        MemoryReduction(diffueraser_nframes=0.0)


def test_oom_retry_flag_turns_the_reduced_retry_off():
    import argparse

    from regdpo.backends.models_config import add_arguments, oom_reduction

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert ModelsConfig.from_args(parser.parse_args([])).oom_retry == "reduced"
    off = ModelsConfig.from_args(parser.parse_args(["--oom_retry", "off"]))
    assert off.oom_retry == "off" and oom_reduction(off) is None and oom_reduction(off, MemoryReduction()) is None
    assert oom_reduction(ModelsConfig()) == MemoryReduction()
    mine = MemoryReduction(diffueraser_nframes=0.25)
    assert oom_reduction(ModelsConfig(), mine) is mine
    with pytest.raises(SystemExit):
        parser.parse_args(["--oom_retry", "maybe"])
    assert any("--oom_retry 'maybe'" in p for p in ModelsConfig(oom_retry="maybe").flag_problems())


# ---------------------------------------------------------------------- the retry in a run


@needs_data
@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "serial"])
def test_an_oom_is_retried_once_reduced_and_recorded_in_meta(tmp_path, overlap):
    sources = _sources()
    victim = sources[1].name
    config = _config(tmp_path / "dpo")
    backend = FlakyBackend(config.flicker_segments, {victim: [_oom()]})
    summary, lines = _run(config, backend, sources, overlap)

    assert [o.status for o in summary.outcomes] == ["written"] * 3
    assert [(o.name, o.attempts, o.reduced) for o in summary.outcomes][1] == (victim, 1, True)
    assert backend.calls == [(sources[0].name, False), (victim, False), (victim, True), (sources[2].name, False)]
    assert not (config.output_dir / fmt.FAILED_DIR / f"{victim}.json").exists()
    meta = fmt.read_json(config.output_dir / victim / fmt.META_FILE)
    assert meta["reduced"] == {"after": f"OutOfMemoryError: {OOM_TEXT}", "settings": {"window": [8, 4]}}
    assert fmt.read_video_meta(config.output_dir, victim).reduced["settings"] == {"window": [8, 4]}
    for other in (sources[0].name, sources[2].name):  # an unreduced video's meta has no new key
        assert set(fmt.read_json(config.output_dir / other / fmt.META_FILE)) & {"reduced", "cuda_peak_memory_mb"} == set()
    assert any(victim in line and "out of GPU memory" in line and "reduced settings" in line for line in lines)
    assert any("1 video written at reduced settings" in line and victim in line for line in summary.lines())
    fmt.validate_video_streams(config.output_dir, fmt.read_video_meta(config.output_dir, victim))
    assert summary.manifest.to_dict()["num_videos"] == 3


@needs_data
def test_the_failed_call_is_unreferenced_when_memory_is_freed(tmp_path, monkeypatch):
    sources = _sources()[:2]
    config = _config(tmp_path / "dpo")
    backend = FlakyBackend(config.flicker_segments, {sources[0].name: [_oom(), _oom()]})
    alive_at_free = []
    real_free = pipeline.free_device_memory

    def checking_free():
        real_free()  # gc.collect (+ empty_cache on CUDA)
        alive_at_free.append([ref() is not None for ref in backend.held])

    monkeypatch.setattr(pipeline, "free_device_memory", checking_free)
    _run(config, backend, sources)
    assert alive_at_free == [[False], [False, False]]  # after each OOM, nothing of the failed call is left


@needs_data
@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "serial"])
def test_a_second_oom_fails_that_video_only_and_resume_retries_it(tmp_path, overlap):
    sources = _sources()
    victim = sources[1].name
    config = _config(tmp_path / "dpo")
    backend = FlakyBackend(config.flicker_segments, {victim: [_oom(), _oom()]})
    summary, lines = _run(config, backend, sources, overlap)

    assert [(o.name, o.status) for o in summary.outcomes] == [
        (sources[0].name, "written"), (victim, "failed"), (sources[2].name, "written")]
    assert backend.calls.count((victim, False)) == 1 and backend.calls.count((victim, True)) == 1
    record = fmt.read_json(config.output_dir / fmt.FAILED_DIR / f"{victim}.json")
    assert record["attempts"] == 1  # the reduced retry is part of the attempt, not another one
    assert record["reason"].startswith("DeviceOutOfMemory: out of GPU memory at the normal and at the reduced settings")
    assert OOM_TEXT in record["reason"]
    assert not (config.output_dir / victim).exists()
    assert any(f"FAILED {victim} (attempt 1 of 2)" in line for line in lines)

    # --resume: the video starts again at the normal settings (the GPU may have had room after all)
    again = _config(tmp_path / "dpo", resume=True)
    backend2 = FlakyBackend(again.flicker_segments, {})
    summary2, _ = _run(again, backend2, sources, overlap)
    assert [o.status for o in summary2.outcomes] == ["done", "written", "done"]
    assert backend2.calls == [(victim, False)]
    assert "reduced" not in fmt.read_json(again.output_dir / victim / fmt.META_FILE)
    assert not (again.output_dir / fmt.FAILED_DIR / f"{victim}.json").exists()


@needs_data
def test_attempts_count_runs_not_reduced_retries(tmp_path):
    sources = _sources()[:1]
    name = sources[0].name
    for run in (1, 2):
        config = _config(tmp_path / "dpo", resume=run > 1)
        backend = FlakyBackend(config.flicker_segments, {name: [_oom(), _oom()]})
        summary, _ = _run(config, backend, sources)
        assert (summary.outcomes[0].status, summary.outcomes[0].attempts) == ("failed", run)
    config = _config(tmp_path / "dpo", resume=True)  # --max_attempts 2 spent: given up, the backend not called
    backend = FlakyBackend(config.flicker_segments, {})
    summary, _ = _run(config, backend, sources)
    assert summary.outcomes[0].status == "gave_up" and backend.calls == []


@needs_data
@pytest.mark.parametrize("error", [RuntimeError("CUDA error: an illegal memory access was encountered"),
                                   MemoryError(), ValueError("CUDA out of memory")],
                         ids=["cuda-error", "cpu-memory", "value-error"])
def test_other_errors_are_not_retried_reduced(tmp_path, error):
    sources = _sources()
    victim = sources[0].name
    config = _config(tmp_path / "dpo")
    backend = FlakyBackend(config.flicker_segments, {victim: [error]})
    summary, _ = _run(config, backend, sources)
    assert [o.status for o in summary.outcomes] == ["failed", "written", "written"]
    assert [c for c in backend.calls if c[0] == victim] == [(victim, False)]
    record = fmt.read_json(config.output_dir / fmt.FAILED_DIR / f"{victim}.json")
    assert record["reason"].startswith(type(error).__name__) and record["attempts"] == 1


@needs_data
def test_a_backend_without_reduced_settings_fails_the_video_without_a_retry(tmp_path):
    sources = _sources()[:2]
    config = _config(tmp_path / "dpo")
    backend = FlakyBackend(config.flicker_segments, {sources[0].name: [_oom()]})
    backend.reducible = False
    summary, _ = _run(config, backend, sources)
    assert [o.status for o in summary.outcomes] == ["failed", "written"]
    assert backend.calls == [(sources[0].name, False), (sources[1].name, False)]
    reason = fmt.read_json(config.output_dir / fmt.FAILED_DIR / f"{sources[0].name}.json")["reason"]
    assert "has no reduced settings" in reason and OOM_TEXT in reason


@needs_data
def test_peak_gpu_memory_is_recorded_when_the_backend_measures_it(tmp_path):
    sources = _sources()[:2]
    plain, measured = _config(tmp_path / "plain"), _config(tmp_path / "cuda")
    _run(plain, FlakyBackend(plain.flicker_segments, {}), sources)
    _run(measured, FlakyBackend(measured.flicker_segments, {}, peak=1234.5), sources)
    for s in sources:
        assert fmt.read_json(measured.output_dir / s.name / fmt.META_FILE)["cuda_peak_memory_mb"] == 1234.5
        assert "cuda_peak_memory_mb" not in fmt.read_json(plain.output_dir / s.name / fmt.META_FILE)
        assert fmt.read_video_meta(measured.output_dir, s.name).cuda_peak_memory_mb == 1234.5
    a, b = _tree(plain.output_dir), _tree(measured.output_dir)
    for path in a:  # every PNG the same; meta differs by the peak (and timings) only
        if path.endswith(fmt.META_FILE):
            assert {**a[path], "timings": 0} == {k: v for k, v in b[path].items() if k != "cuda_peak_memory_mb"} | {"timings": 0}
        else:
            assert a[path] == b[path], path


def test_meta_refuses_malformed_reduced_and_peak_fields():
    meta = fmt.VideoMeta("v", 1, 8, 8, ["blur"]).to_dict()
    assert "reduced" not in meta and "cuda_peak_memory_mb" not in meta
    for key, value in (("reduced", "yes"), ("reduced", {"after": "x"}), ("cuda_peak_memory_mb", -1),
                       ("cuda_peak_memory_mb", "big"), ("cuda_peak_memory_mb", True)):
        with pytest.raises(fmt.FormatError, match=key):
            fmt.VideoMeta.from_dict({**meta, key: value})
    ok = fmt.VideoMeta.from_dict({**meta, "reduced": {"after": "x", "settings": {}}, "cuda_peak_memory_mb": 3})
    assert ok.to_dict()["reduced"] == {"after": "x", "settings": {}} and ok.cuda_peak_memory_mb == 3
