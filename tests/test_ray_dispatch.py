"""The Ray engine's driver (``ray_engine._Dispatch``) against a scripted, in-process stand-in for Ray.

Deaths come exactly where a test puts them (before a video is made, or after it is committed but before
the actor reports), so the paths that a real cluster hits only by chance are pinned: a video committed
by an actor that then died, a video that kills every actor it is given to, an innocent video sharing an
actor with it, SIGTERM in the middle of a run. Needs no Ray: the stand-in models what the engine relies
on (actor calls run in order, a dead process fails the calls it held, Ray restarts the actor).
"""

from __future__ import annotations

import functools
import types
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from regdpo import format as fmt
from regdpo.backends.classical import ClassicalBackend
from regdpo.errors import Terminated
from regdpo.generate import ray_engine
from regdpo.generate.config import GenerateConfig
from regdpo.generate.pipeline import run_generation
from regdpo.generate.sources import discover_sources
from test_generate_shards import output_files


class RayActorError(Exception):
    pass


class FakeRef:
    def __init__(self, actor, method, args):
        self.actor, self.method, self.args, self.life = actor, method, args, actor.life
        self.ran, self.value, self.error = False, None, None


class FakeActor:
    """One actor: its current incarnation (``life``), the object living in it, and its calls."""

    def __init__(self, ray, index, cls, args):
        self.ray, self.index, self.cls, self.args = ray, index, cls, args
        self.life, self.killed, self.instance = 0, False, cls(*args)

    def __getattr__(self, method):
        actor = self

        class Method:
            @staticmethod
            def remote(*args):
                ref = FakeRef(actor, method, args)
                actor.ray.issued.append(ref)
                return ref

        return Method

    def restart(self):
        self.life += 1
        self.instance = self.cls(*self.args)


class FakeRay:
    """``death(actor_index, method, args) -> None | "before" | "after"`` scripts the deaths;
    ``interrupt_after``: raise ``Terminated`` (SIGTERM) once that many calls have run."""

    exceptions = types.SimpleNamespace(RayActorError=RayActorError)

    def __init__(self, death=lambda a, method, args: None, interrupt_after=None):
        self.death, self.interrupt_after = death, interrupt_after
        self.issued, self.actors, self.calls_run, self.kills = [], [], 0, 0

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return {"CPU": 2.0, "GPU": 2.0}

    def remote(self, **options):
        ray = self

        def decorate(cls):
            class ActorClass:
                @staticmethod
                def remote(*args):
                    actor = FakeActor(ray, len(ray.actors), cls, args)
                    ray.actors.append(actor)
                    return actor

            return ActorClass

        return decorate

    def _run(self, ref):
        if ref.ran:
            return
        ref.ran = True
        actor = ref.actor
        if actor.killed or ref.life != actor.life:  # the process that held this call is gone
            ref.error = RayActorError(f"actor {actor.index} died")
            return
        if self.interrupt_after is not None and self.calls_run >= self.interrupt_after:
            ref.ran = False
            raise Terminated("terminated by signal 15")
        self.calls_run += 1
        when = self.death(actor.index, ref.method, ref.args)
        if when == "before":
            actor.restart()
            ref.error = RayActorError(f"actor {actor.index} died")
            return
        ref.value = getattr(actor.instance, ref.method)(*ref.args)
        if when == "after":
            actor.restart()
            ref.value, ref.error = None, RayActorError(f"actor {actor.index} died")

    def wait(self, refs, num_returns=1, timeout=None):
        pending = [r for r in self.issued if r in refs]  # calls run in the order they were made
        ready = [r for r in pending if r.ran]
        for ref in pending:
            if len(ready) >= num_returns:
                break
            if not ref.ran:
                self._run(ref)
                ready.append(ref)
        return ready[:num_returns], [r for r in refs if r not in ready[:num_returns]]

    def get(self, ref):
        self._run(ref)
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, actor, no_restart=False):
        actor.killed = True
        self.kills += 1

    def shutdown(self):
        pass


def _videos(root, count=6, frames=16, size=(72, 56)):
    """``count`` small synthetic videos (a moving gradient and a square), folders of PNG frames."""
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    for k in range(count):
        folder = root / f"clip{k}"
        folder.mkdir(parents=True)
        for t in range(frames):
            frame = np.stack([(xx * 3 + t * 5 + k * 20) % 256, (yy * 4 + k * 30) % 256,
                              ((xx + yy) * 2 + t * 3) % 256], axis=-1).astype(np.uint8)
            frame[8 + t: 24 + t, 20 + 2 * k: 36 + 2 * k] = (200, 40, 90)
            Image.fromarray(frame).save(folder / f"{t:05d}.png")
    return root


def _config(videos, out, **extra):
    return GenerateConfig(output_dir=out, video_root=videos, nframes=8, resolution=48, seed=5, progress=False, **extra)


def _run(videos, out, fake=None, **extra):
    sources = discover_sources(None, None, None, "train", videos, 30.0)
    if fake is None:
        return run_generation(_config(videos, out, **extra), ClassicalBackend(), sources)
    with mock.patch.object(ray_engine, "import_ray", lambda: fake):  # no Ray needed
        engine = ray_engine.RayEngine(functools.partial(ClassicalBackend), workers=2, gpus_per_worker=1.0,
                                      log=lambda line: None)
    try:
        return run_generation(_config(videos, out, **extra), None, sources, engine=engine), engine
    finally:
        engine.close()


def _making(name):
    """The death script's test: is this call ``make`` of the video of source folder ``name``?"""
    return lambda method, args: method == "make" and args[0].name == f"video_{name}"


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    videos = _videos(root / "videos")
    _run(videos, root / "out")
    return videos, output_files(root / "out")


def test_fake_actors_without_deaths_give_the_bytes_of_a_local_run(local_run, tmp_path):
    videos, expected = local_run
    summary, engine = _run(videos, tmp_path / "out", FakeRay())
    assert [o.status for o in summary.outcomes] == ["written"] * 6
    assert engine.deaths == 0
    assert output_files(tmp_path / "out") == expected


def test_a_video_committed_by_an_actor_that_died_before_reporting_counts_as_written(local_run, tmp_path):
    videos, expected = local_run
    name = sorted(p.name for p in videos.iterdir())[2]
    first = []

    def death(actor, method, args):
        if _making(name)(method, args) and not first:
            first.append(actor)
            return "after"  # meta.json is on disk, the driver never hears of it

    summary, engine = _run(videos, tmp_path / "out", FakeRay(death))
    assert first and engine.deaths >= 1
    assert [o.status for o in summary.outcomes] == ["written"] * 6  # not "already done": this run made it
    assert output_files(tmp_path / "out") == expected
    assert not (tmp_path / "out" / fmt.STAGING_DIR).exists()


def test_a_video_that_kills_every_actor_is_recorded_failed_and_only_it(local_run, tmp_path):
    videos, expected = local_run
    names = sorted(p.name for p in videos.iterdir())
    poison = names[2]  # the second actor's first video: the one queued behind it on that actor dies with it
    fake = FakeRay(lambda actor, method, args: "before" if _making(poison)(method, args) else None)
    summary, engine = _run(videos, tmp_path / "out", fake)
    status = {o.name: o.status for o in summary.outcomes}
    assert status.pop(f"video_{poison}") == "failed"
    assert set(status.values()) == {"written"}  # the videos in flight beside it were not blamed
    failure = fmt.read_json(tmp_path / "out" / fmt.FAILED_DIR / f"video_{poison}.json")
    assert "died 3 times" in failure["reason"] and failure["attempts"] == 1
    assert engine.deaths == 3 + 1  # its three, and the one of the video in flight behind it the first time
    files = output_files(tmp_path / "out")
    assert {k: v for k, v in files.items() if not k.startswith(f"video_{poison}") and not k.startswith("_")
            and k != fmt.MANIFEST_FILE} == {k: v for k, v in expected.items() if not k.startswith(f"video_{poison}")
                                            and k != fmt.MANIFEST_FILE}
    assert not (tmp_path / "out" / fmt.STAGING_DIR).exists()


def test_sigterm_in_a_ray_run_leaves_a_folder_that_resumes_to_the_same_bytes(local_run, tmp_path):
    videos, expected = local_run
    out = tmp_path / "out"
    fake = FakeRay(interrupt_after=5)  # two pid probes and three videos have run
    with pytest.raises(Terminated):
        _run(videos, out, fake)
    assert fake.kills == 2  # every actor stopped
    assert not (out / fmt.STAGING_DIR).exists()
    assert (out / fmt.MANIFEST_FILE).is_file()  # rebuilt on the way out
    done = [p.name for p in out.iterdir() if (p / fmt.META_FILE).is_file()]
    assert 0 < len(done) < 6
    summary, _ = _run(videos, out, FakeRay(), resume=True)
    assert sorted(o.status for o in summary.outcomes) == sorted(["done"] * len(done) + ["written"] * (6 - len(done)))
    assert output_files(out) == expected
