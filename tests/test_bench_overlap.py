"""bench/bench_overlap.py: the derived figures and the bench-only simulated-GPU backend (no timing asserted)."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_overlap  # noqa: E402

from regdpo.backends.base import BackendResult, Clip, NegativeBackend  # noqa: E402


def test_figures_hidden_is_the_share_of_a_perfect_pipelines_saving():
    serial = {"videos": 5, "wall": 1.0, "read": 0.0, "compute": 0.6, "write": 0.4}
    perfect = {"videos": 5, "wall": 0.6 + 0.4 / 5, "read": 0.0, "compute": 0.6, "write": 0.4}  # max + (sum-max)/N
    f = bench_overlap.figures(serial, perfect)
    assert f["hidden"] == pytest.approx(1.0)
    assert f["max_compute_write"] == 0.6 and f["compute_plus_write"] == pytest.approx(1.0)
    assert f["idle_serial"] == pytest.approx(0.4) and f["idle_overlapped"] == pytest.approx(0.08)
    assert bench_overlap.figures(serial, serial)["hidden"] == 0.0


class CountingBackend(NegativeBackend):
    name, supported_types = "counting", ("blur",)

    def __init__(self):
        self.calls = 0

    def generate(self, clip, neg_types, strengths=None):
        self.calls += 1
        time.sleep(0.05)
        return BackendResult({"blur": clip.frames + 1}, {"blur": {"k": 1}}, {"blur": 0.05})

    def settings(self):
        return {"s": 1}


def test_simulated_gpu_replays_the_recorded_result_after_its_seconds():
    inner = CountingBackend()
    sim = bench_overlap.SimulatedGPUBackend(inner)
    clip = Clip("v", np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), bool), 1)
    first = sim.generate(clip, ["blur"])
    recorded = first.negatives["blur"].copy()
    t0 = time.perf_counter()
    again = sim.generate(clip, ["blur"])
    assert time.perf_counter() - t0 >= 0.05 * 0.9  # slept the recorded compute time
    assert inner.calls == 1  # the real backend ran once, on the recording call
    assert np.array_equal(again.negatives["blur"], recorded)
    assert again.negatives["blur"] is not first.negatives["blur"]  # a copy: the writer may own it
    assert (sim.name, sim.settings(), again.info) == ("counting", {"s": 1}, {"blur": {"k": 1}})
