"""``--engine ray``: the videos of a run spread over Ray actors, one backend each.

Each actor (``VideoActor``) builds its backend once (``backend_factory()``, e.g. the models on its
GPU) and makes one video per call with the run's ``VideoStages``: prepare, compute, finish, so it
writes into the shared output folder and records per-video failures itself, exactly as the local
loop does. The driver holds the run lock and a shared queue: it hands each actor the next video as
soon as it has room (two in flight per actor, so an actor never waits for the driver), so faster GPUs
take more videos and actors that start late (a machine joining the cluster) simply start pulling.

Resume is regdpo's own, not Ray's: a committed video is done. When an actor's process dies, Ray
restarts it (``max_restarts``; the backend is built again) and the driver gives its videos out again
(one the dead actor had committed before it could report is then found complete: it still counts as
written by this run, which the driver had handed it to as work to do); a video that has been in flight during ``MAX_DEATHS`` deaths is recorded as failed (``stages.lost``:
under ``_failed/``, as any failing video; it may be the cause) and the run goes on. Plain actors (no
Ray Data); resources per actor: ``num_gpus`` (fractional allowed), ``num_cpus`` (keep it below 1 on
small machines or the actors never all start).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from typing import Any, Callable, Sequence

from ..errors import UsageError
from .engine import Engine, OnOutcome, Stages

MAX_DEATHS = 3
"""Deaths of actors making one video before that video is recorded as failed."""
IN_FLIGHT_PER_ACTOR = 2
RESTART_POLL_S = 0.2
STOP_WAIT_S = 10.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--engine ray needs Ray, which is not installed: pip install -e '.[ray]' "
                         "(or pip install 'ray>=2.10')") from None
    return ray


class VideoActor:
    """One Ray worker: a backend built once, then one video per ``make`` call."""

    def __init__(self, backend_factory: Callable[[], Any], stages: Stages):
        regdpo_logger = logging.getLogger("regdpo")  # per-video messages reach the driver (log_to_driver)
        if not regdpo_logger.handlers:
            regdpo_logger.addHandler(logging.StreamHandler())
            regdpo_logger.setLevel(logging.INFO)
        self.backend = backend_factory()
        self.stages = stages

    def pid(self) -> int:
        return os.getpid()

    def settings(self) -> dict[str, Any]:
        return self.backend.settings()

    def make(self, source: Any) -> Any:
        stages = self.stages
        return stages.finish(stages.compute(stages.prepare(source), self.backend))


class RayEngine(Engine):
    """Runs the stages on ``workers`` Ray actors of ``gpus_per_worker`` GPUs and ``cpus_per_worker`` CPUs."""

    name = "ray"

    def __init__(self, backend_factory: Callable[[], Any], workers: int | None = None, gpus_per_worker: float = 1.0,
                 cpus_per_worker: float = 0.5, address: str | None = None, max_restarts: int = -1,
                 log: Callable[[str], None] = print):
        """``max_restarts=-1``: Ray restarts a dead actor every time (a video that keeps killing its
        actor is stopped by ``MAX_DEATHS``)."""
        self.backend_factory = backend_factory
        self.workers, self.gpus_per_worker, self.cpus_per_worker = workers, gpus_per_worker, cpus_per_worker
        self.address, self.max_restarts, self.log = address, max_restarts, log
        self.ray = import_ray()
        self.actors: list[Any] = []
        self.pids: list[int | None] = []
        self.deaths = 0  # actor deaths seen with a video in flight, this run
        self.started_ray = False

    # -- set-up
    def _connect(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=True)
            self.started_ray = True
        resources = ray.cluster_resources()
        if self.workers is None:  # one per GPU (per CPU for a CPU backend) the cluster has now
            if self.gpus_per_worker > 0:
                self.workers = max(1, int(resources.get("GPU", 0) // self.gpus_per_worker))
            else:
                self.workers = max(1, int(resources.get("CPU", 1) // max(self.cpus_per_worker, 1)))
        if self.gpus_per_worker > 0 and resources.get("GPU", 0) < self.gpus_per_worker:
            self.log(f"ray: the cluster has no {self.gpus_per_worker} GPU free now; the workers wait for a node "
                     f"with GPUs to join (or use --gpus_per_worker 0 for a CPU backend)")

    def start(self, stages: Stages) -> None:
        """Connect and start the actors (each builds its backend when Ray has placed it; never waited for
        here, so that actors waiting for a GPU machine to join do not hold the run back)."""
        if self.actors:
            return
        self._connect()
        ray = self.ray
        actor_class = ray.remote(num_gpus=self.gpus_per_worker, num_cpus=self.cpus_per_worker,
                                 max_restarts=self.max_restarts, max_task_retries=0)(VideoActor)
        self.actors = [actor_class.remote(self.backend_factory, stages) for _ in range(self.workers)]
        self.pids = [None] * self.workers  # each actor's process, learnt from the actor (``_Dispatch``)
        self.log(f"ray: {self.workers} workers of {self.gpus_per_worker:g} GPU, {self.cpus_per_worker:g} CPU")

    def backend_settings(self, stages: Stages) -> dict[str, Any]:
        self.start(stages)
        return self.ray.get(self.actors[0].settings.remote())

    # -- the run
    def run(self, stages: Stages, sources: Sequence[Any], on_outcome: OnOutcome) -> None:
        self.start(stages)
        dispatch = _Dispatch(self, stages, on_outcome)
        try:
            dispatch.run(sources)
        finally:  # also on Ctrl-C / SIGTERM: a video in flight is abandoned, its staging folder removed
            self.stop_actors(in_flight=list(dispatch.calls))
            clear_abandoned = getattr(stages, "clear_abandoned", None)
            if clear_abandoned is not None:  # what actors killed mid-video (by us, or before) left half-written
                clear_abandoned()

    def stop_actors(self, in_flight: Sequence[Any] = ()) -> None:
        """Kill the actors; wait (up to ``STOP_WAIT_S``) until the calls ``in_flight`` end, i.e. their
        processes are gone and write nothing more."""
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if in_flight:
            try:
                self.ray.wait(list(in_flight), num_returns=len(in_flight), timeout=STOP_WAIT_S)
            except Exception:  # noqa: BLE001 - best effort while stopping; the next run clears staging anyway
                pass

    def close(self) -> None:
        """Stop the actors; disconnect from Ray when this engine connected (``ray.init``) itself."""
        self.stop_actors()
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False


def _lost(stages: Stages, source: Any, reason: str) -> Any:
    """The outcome of a video lost with its workers: recorded by ``stages.lost`` (``VideoStages``)."""
    lost = getattr(stages, "lost", None)
    if lost is None:
        raise RuntimeError(f"{getattr(source, 'name', source)}: {reason}")
    return lost(source, reason)


def _written_by_the_dead(outcome: Any) -> Any:
    """A video given out again after a death and found complete was committed by the actor that died
    before it could report: this run wrote it (it was to do when the run began), so it counts as written."""
    if getattr(outcome, "status", None) != "done":
        return outcome
    return dataclasses.replace(outcome, status="written", reason="committed by a Ray worker that died before reporting")


class _Dispatch:
    """One run of the driver's queue: videos to ready actors, two in flight each (one, for a video given
    out again after a death); outcomes in order.

    An actor whose call fails with ``RayActorError`` has died (or is restarting): its videos go back to the
    front of the queue and it gets no more until a probe (``pid``) answers, i.e. Ray has restarted it. A
    death counts against a video only when the video was handed to that incarnation of the actor."""

    def __init__(self, engine: RayEngine, stages: Stages, on_outcome: OnOutcome):
        self.engine, self.ray, self.stages, self.on_outcome = engine, engine.ray, stages, on_outcome
        n = len(engine.actors)
        self.load, self.ready, self.life = [0] * n, [True] * n, [0] * n  # life: incarnation seen by the driver
        self.alone = [False] * n  # making a video that was in flight at a death, and nothing else
        self.calls: dict[Any, tuple[int, int, int, Any, int]] = {}  # ref -> (actor, life, index, source, deaths)
        self.probes: dict[Any, int] = {}  # ref -> actor
        self.todo: collections.deque = collections.deque()
        self.done: dict[int, Any] = {}
        self.given_again: set[int] = set()  # videos handed out again after an actor died with them
        self.next_out = 0
        for a, actor in enumerate(engine.actors):  # learn the pids; calls queue on an actor until it is up
            self.probes[actor.pid.remote()] = a

    def run(self, sources: Sequence[Any]) -> None:
        self.todo.extend((i, source, 0) for i, source in enumerate(sources))
        self._feed()
        while self.calls or self.probes:
            (ref,), _ = self.ray.wait(list(self.calls) + list(self.probes), num_returns=1)
            if ref in self.probes:
                self._probed(ref)
            else:
                self._returned(ref)
            while self.next_out in self.done:
                self.on_outcome(self.done.pop(self.next_out))
                self.next_out += 1
            self._feed()

    def _feed(self) -> None:
        """A video that was in flight at a death goes out alone (an idle actor, nothing added until it
        returns): a death then is its own, so a video that kills its actor reaches ``MAX_DEATHS`` and
        the videos that happened to share an actor with it do not."""
        for a, actor in enumerate(self.engine.actors):
            while self.todo and self.ready[a] and not self.alone[a] and self.load[a] < IN_FLIGHT_PER_ACTOR:
                if self.todo[0][2] and self.load[a]:
                    break
                i, source, deaths = self.todo.popleft()
                self.calls[actor.make.remote(source)] = (a, self.life[a], i, source, deaths)
                self.load[a] += 1
                self.alone[a] = deaths > 0

    def _returned(self, ref: Any) -> None:
        a, life, i, source, deaths = self.calls.pop(ref)
        self.load[a] -= 1
        self.alone[a] = self.alone[a] and self.load[a] > 0
        try:
            outcome = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:  # the actor's process died (Ray restarts it)
            reason = type(exc).__name__
        else:
            self.done[i] = _written_by_the_dead(outcome) if i in self.given_again else outcome
            return
        if life == self.life[a]:  # news of this death: wait for the restart before giving it more
            self.life[a] += 1
            self.ready[a] = False
            self.probes[self.engine.actors[a].pid.remote()] = a
        if life == self.life[a] - 1:
            deaths += 1
            self.engine.deaths += 1
        if deaths >= MAX_DEATHS:
            self.done[i] = _lost(self.stages, source, f"a Ray worker died {deaths} times while making it ({reason})")
            return
        self.engine.log(f"ray: worker {a} died while making {getattr(source, 'name', source)}; giving it out again")
        self.given_again.add(i)
        self.todo.appendleft((i, source, deaths))

    def _probed(self, ref: Any) -> None:
        a = self.probes.pop(ref)
        try:
            self.engine.pids[a] = self.ray.get(ref)
        except self.ray.exceptions.RayActorError:  # still restarting: ask again shortly
            time.sleep(RESTART_POLL_S)
            self.probes[self.engine.actors[a].pid.remote()] = a
            return
        self.engine.log(f"ray: worker {a} {'is up' if self.ready[a] else 'is back'} (pid {self.engine.pids[a]})")
        self.ready[a] = True
