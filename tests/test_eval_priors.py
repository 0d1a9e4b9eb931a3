"""The ProPainter prior cache (``regdpo.evaluation.priors``) with a counting fake in place of ProPainter (CPU,
seconds): one computation per clip across models and runs, the key, the disk store's damage handling and
safety, and the eval runner's plumbing. The real ProPainter / DiffuEraser classes: tests/test_eval_priors_models.py.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from regdpo.errors import FormatError
from regdpo.evaluation.priors import DiskStore, MemoryStore, PriorCache, prior_key


class CountingProPainter:
    """A stand-in for ProPainter: a deterministic function of the clip, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed = 0

    def __call__(self, frames: np.ndarray, hole: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = frames.copy()
        out[hole] = (frames[hole].astype(np.uint16) * 7 % 251).astype(np.uint8)
        return out

    def close(self) -> None:
        self.closed += 1


def clip(seed: int, frames: int = 3, h: int = 16, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
    hole = np.zeros((frames, h, w), dtype=bool)
    hole[:, 4:10, 5:15] = True
    return video, hole


SETTINGS = {"propainter": {"resize_ratio": 0.6}, "weights": {"ProPainter.pth": "ab" * 32}}


def test_the_key_covers_frames_hole_and_settings_only():
    frames, hole = clip(0)
    key = prior_key(frames, hole, SETTINGS)
    assert len(key) == 64 and key == prior_key(frames.copy(), hole.copy(), dict(SETTINGS))
    other_frames = frames.copy()
    other_frames[0, 0, 0, 0] ^= 1
    other_hole = hole.copy()
    other_hole[0, 0, 0] = True
    keys = {key, prior_key(other_frames, hole, SETTINGS), prior_key(frames, other_hole, SETTINGS),
            prior_key(frames, hole, {**SETTINGS, "propainter": {"resize_ratio": 1.0}}),
            prior_key(frames[:2], hole[:2], SETTINGS), prior_key(frames, hole.astype(np.uint8), SETTINGS)}
    assert len(keys) == 6


def test_memory_cache_computes_each_clip_once_for_every_model():
    fake = CountingProPainter()
    cache = PriorCache(fake, SETTINGS, MemoryStore())
    clips = [clip(k) for k in range(3)]
    firsts = [cache.get(f, h) for f, h in clips]
    for _model in range(2):  # two more models
        again = [cache.get(f, h) for f, h in clips]
        assert all(np.array_equal(a, b) for a, b in zip(firsts, again))
    assert fake.calls == 3 and cache.counts() == {"computed": 3, "reused": 6}
    assert cache.summary().startswith("ProPainter priors: 3 computed (") and "6 reused (in memory)" in cache.summary()
    firsts[0][:] = 0  # a caller changing its array changes nothing stored
    assert np.array_equal(cache.get(*clips[0]), CountingProPainter()(*clips[0]))
    cache.release()
    assert fake.closed == 1


def test_a_wrong_prior_from_compute_is_refused():
    cache = PriorCache(lambda f, h: f[:, :8], SETTINGS, MemoryStore())
    with pytest.raises(ValueError, match="expected uint8"):
        cache.get(*clip(0))


def test_disk_cache_survives_a_new_run_and_recomputes_a_damaged_file(tmp_path):
    folder = tmp_path / "out" / "priors"
    clips = [clip(k) for k in range(3)]
    fake = CountingProPainter()
    first = PriorCache(fake, SETTINGS, DiskStore(folder))
    priors = [first.get(f, h) for f, h in clips]
    assert fake.calls == 3
    files = sorted(folder.iterdir())
    assert [p.name for p in files] == sorted(f"{prior_key(f, h, SETTINGS)}.npz" for f, h in clips)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary left
    # a resumed run (a new process): nothing computed
    fake2 = CountingProPainter()
    resumed = PriorCache(fake2, SETTINGS, DiskStore(folder))
    assert all(np.array_equal(resumed.get(f, h), p) for (f, h), p in zip(clips, priors))
    assert fake2.calls == 0 and resumed.counts() == {"computed": 0, "reused": 3}
    # other ProPainter settings: other keys, computed
    other = PriorCache(CountingProPainter(), {**SETTINGS, "propainter": {"resize_ratio": 1.0}}, DiskStore(folder))
    other.get(*clips[0])
    assert other.counts() == {"computed": 1, "reused": 0} and len(list(folder.iterdir())) == 4
    # damaged: truncated, one byte flipped (ZIP's CRC-32), another clip's file under this name, a FIFO
    key = prior_key(*clips[0], SETTINGS)
    path = folder / f"{key}.npz"
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    foreign = (folder / f"{prior_key(*clips[1], SETTINGS)}.npz").read_bytes()
    plain_npy = io.BytesIO()
    np.save(plain_npy, priors[0])  # a bare .npy, not our archive
    extra = io.BytesIO()
    np.savez(extra, prior=priors[0], key=np.array(key), more=np.zeros(1))
    bomb = io.BytesIO()  # small on disk, 300 kB inflated (and of another shape)
    np.savez_compressed(bomb, prior=np.zeros((100, 1000, 3), np.uint8), key=np.array(key))
    assert len(bomb.getvalue()) < 4096
    # a member larger than the limit is not inflated at all
    from regdpo.evaluation.priors import _read_npz

    assert np.array_equal(_read_npz(good, key, priors[0].shape, priors[0].nbytes + 1024), priors[0])
    assert _read_npz(good, key, priors[0].shape, priors[0].nbytes // 2) is None
    for damage in (good[: len(good) // 2], bytes(flipped), foreign, b"not a zip", plain_npy.getvalue(),
                   extra.getvalue(), bomb.getvalue()):
        path.write_bytes(damage)
        fake3 = CountingProPainter()
        cache = PriorCache(fake3, SETTINGS, DiskStore(folder))
        assert np.array_equal(cache.get(*clips[0]), priors[0]) and fake3.calls == 1
        assert cache.store.damaged == 1 and "1 damaged cached file(s) recomputed" in cache.summary()
        assert path.read_bytes() == good  # rewritten, whole
    if hasattr(os, "mkfifo"):
        path.unlink()
        os.mkfifo(path)
        cache = PriorCache(CountingProPainter(), SETTINGS, DiskStore(folder))
        assert np.array_equal(cache.get(*clips[0]), priors[0]) and cache.store.damaged == 1  # never blocks
        assert path.is_file() and path.read_bytes() == good


def test_disk_cache_never_writes_through_links_or_outside_its_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    frames, hole = clip(0)
    key = prior_key(frames, hole, SETTINGS)
    # the priors folder is a link: refused, nothing written there
    folder = tmp_path / "out" / "priors"
    folder.parent.mkdir()
    folder.symlink_to(outside, target_is_directory=True)
    with pytest.raises(FormatError, match="symbolic link"):
        PriorCache(CountingProPainter(), SETTINGS, DiskStore(folder)).get(frames, hole)
    assert list(outside.iterdir()) == []
    # a link planted at a prior's name: not read, replaced (the target untouched)
    folder.unlink()
    folder.mkdir()
    target = outside / "victim"
    target.write_bytes(b"keep")
    (folder / f"{key}.npz").symlink_to(target)
    cache = PriorCache(CountingProPainter(), SETTINGS, DiskStore(folder))
    cache.get(frames, hole)
    assert cache.counts() == {"computed": 1, "reused": 0} and target.read_bytes() == b"keep"
    assert not (folder / f"{key}.npz").is_symlink()
    with pytest.raises(ValueError, match="not a prior key"):
        DiskStore(folder).path("../x")


def test_a_killed_runs_temporary_is_removed(tmp_path):
    folder = tmp_path / "priors"
    folder.mkdir()
    frames, hole = clip(0)
    key = prior_key(frames, hole, SETTINGS)
    stale = folder / f".{key}.npz.0123456789ab.tmp"
    stale.write_bytes(b"half")
    unrelated = folder / "notes.txt"
    unrelated.write_text("mine")
    PriorCache(CountingProPainter(), SETTINGS, DiskStore(folder)).get(frames, hole)
    assert not stale.exists() and unrelated.read_text() == "mine"


# ---------------------------------------------------------------------- the eval runner's plumbing


def _evalset(tmp_path: Path) -> Path:
    from regdpo.audit.synthetic import textured_clip
    from regdpo.cli import main
    from regdpo.frames import write_rgb

    videos = tmp_path / "videos"
    for k in range(3):
        (videos / f"v{k}").mkdir(parents=True)
        for i, frame in enumerate(textured_clip(5, 40, 56, seed=k + 1)):
            write_rgb(videos / f"v{k}" / f"{i:05d}.png", frame)
    out = tmp_path / "evalset"
    assert main(["evalset", str(out), "--video_root", str(videos), "--nframes", "3", "--height", "32", "--width",
                 "48", "--split", "test:3", "--no_progress"]) == 0
    return out


class PriorModel:
    """A stand-in model that starts from the prior as DiffuEraser does: its output is a function of the prior
    and of its own weights (``gain``); with no cache it computes the prior itself, as the models backend."""

    def __init__(self, gain: int, priors: PriorCache | None, fake: CountingProPainter):
        self.gain, self.priors, self.fake = gain, priors, fake

    def inpaint(self, c):
        prior = self.fake(c.frames, c.hole) if self.priors is None else self.priors.get(c.frames, c.hole)
        return (prior.astype(np.uint16) * self.gain % 256).astype(np.uint8)

    def close(self):
        pass


def test_runner_computes_each_prior_once_for_all_models_with_the_same_bytes(tmp_path):
    from regdpo.evaluation.evalset import load_evalset
    from regdpo.evaluation.models import EvalModel
    from regdpo.evaluation.runner import EvalRunner

    evalset = load_evalset(_evalset(tmp_path))
    clips = evalset.split("test")

    def run(out: Path, cached: bool, gains=(3, 5)) -> tuple[CountingProPainter, PriorCache | None]:
        fake = CountingProPainter()
        priors = PriorCache(fake, SETTINGS, DiskStore(out / "priors")) if cached else None
        models = [EvalModel(f"m{g}", f"m{g}", {"gain": g}, (lambda g=g: PriorModel(g, priors, fake)))
                  for g in gains]
        EvalRunner(evalset, clips, models, out, save_frames=True, progress=False, log=lambda line: None).run()
        return fake, priors

    fake, priors = run(tmp_path / "cached", True)
    assert fake.calls == 3 and priors.counts() == {"computed": 3, "reused": 3}
    plain, _ = run(tmp_path / "plain", False)
    assert plain.calls == 6

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.relative_to(root).parts[0] != "priors"}

    assert tree(tmp_path / "cached") == tree(tmp_path / "plain") and len(tree(tmp_path / "plain")) > 12
    # a later run adding a model to the same folder: its priors come from disk, nothing is computed
    fake, priors = run(tmp_path / "cached", True, gains=(3, 5, 7))
    assert fake.calls == 0 and priors.counts() == {"computed": 0, "reused": 3}
