"""Contract tests of the models backend against the real DiffuEraser / ProPainter code.

They build tiny randomly initialised models with the real classes (``models_tiny``), save
them in the user's folder layout, and run the backend end to end on CPU. They need a
DiffuEraser checkout (``REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser``, or the code on
``PYTHONPATH``) and the ``[models]`` extra plus a working torchvision; otherwise they skip
and say why. Run them with::

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser pytest tests/test_models_contract.py
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.backends.base import Clip, plan_segments
from regdpo.backends.models_config import ModelsConfig
from regdpo.frames import read_mask_clip, read_rgb_clip
from regdpo.writer import write_video_entry

from helpers import DATA
from model_fixtures import DE_REPO, needs_diffueraser

pytestmark = needs_diffueraser()

FRAMES, SIZE = 6, 160


@pytest.fixture(scope="module")
def backend(tiny_paths):
    from regdpo.backends.models import ModelsBackend

    config = ModelsConfig(
        **tiny_paths, diffueraser_repo=DE_REPO, device="cpu", flicker_segments=2, diffueraser_nframes=4,
        propainter_resize_ratio=0.8, propainter_raft_iter=1,
    )
    be = ModelsBackend(config)
    yield be
    be.close()


def make_clip(seed: int = 11, frames: int = FRAMES) -> Clip:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (SIZE, SIZE + 8 * frames, 3), dtype=np.uint8)
    video = np.stack([base[:, 8 * t:8 * t + SIZE] for t in range(frames)])  # a panning texture
    hole = np.zeros(video.shape[:3], bool)
    for t in range(frames):
        hole[t, 40 + 2 * t:100 + 2 * t, 48:120] = True
    return Clip(name="tiny", frames=video, hole=hole, seed=seed)


@pytest.fixture(scope="module")
def fp16_backend(tiny_paths):
    """``backend``'s settings at ``--model_precision fp16`` on the CPU (DiffuEraser's forward() is fp16)."""
    from regdpo.backends.models import ModelsBackend

    config = ModelsConfig(
        **tiny_paths, diffueraser_repo=DE_REPO, device="cpu", model_precision="fp16", flicker_segments=2,
        diffueraser_nframes=4, propainter_resize_ratio=0.8, propainter_raft_iter=1,
    )
    be = ModelsBackend(config)
    yield be
    be.close()


@pytest.fixture(scope="module")
def first(backend):
    clip = make_clip()
    return clip, backend.generate(clip, fmt.NEG_TYPES)


def test_all_negatives_have_the_clip_shape(first):
    clip, result = first
    assert set(result.negatives) == set(fmt.NEG_TYPES)
    for neg_type, frames in result.negatives.items():
        assert frames.shape == clip.frames.shape and frames.dtype == np.uint8, neg_type
        assert not np.array_equal(frames[clip.hole], clip.frames[clip.hole]), f"{neg_type} left the hole as GT"


def test_written_entry_equals_gt_outside_the_hole(first, tmp_path):
    clip, result = first
    meta = fmt.VideoMeta(name=clip.name, num_frames=clip.num_frames, height=SIZE, width=SIZE,
                         neg_types=list(fmt.NEG_TYPES), seed=clip.seed, negatives=result.info,
                         timings=result.timings)
    write_video_entry(tmp_path, meta, clip.frames, clip.hole, result.negatives)
    entry = fmt.read_video_meta(tmp_path, clip.name)
    fmt.validate_video_streams(tmp_path, entry)
    names = fmt.frame_names(clip.num_frames)
    hole = read_mask_clip([tmp_path / clip.name / fmt.MASK_DIR / n for n in names])
    assert np.array_equal(hole, clip.hole)
    for neg_type in fmt.NEG_TYPES:
        stored = read_rgb_clip([tmp_path / clip.name / neg_type / n for n in names])
        assert np.array_equal(stored[~hole], clip.frames[~hole]), neg_type
        assert np.array_equal(stored[hole], result.negatives[neg_type][hole]), neg_type


def test_generate_is_deterministic(backend, first):
    clip, result = first
    again = backend.generate(clip, fmt.NEG_TYPES)
    for neg_type in fmt.NEG_TYPES:
        assert np.array_equal(again.negatives[neg_type], result.negatives[neg_type]), neg_type
    assert again.info == result.info


def test_another_seed_changes_the_diffusion_negatives(backend, first):
    clip, result = first
    other = backend.generate(make_clip(seed=12), ["hallucination"])
    assert set(other.negatives) == {"hallucination"}
    assert "propainter" not in other.timings  # hallucination alone needs no ProPainter run
    assert not np.array_equal(other.negatives["hallucination"], result.negatives["hallucination"])


def test_meta_records_seeds_segments_and_timings(first):
    clip, result = first
    flicker = result.info["flicker"]
    assert flicker["segments"] == [list(s) for s in plan_segments(FRAMES, 2)]
    assert len(set(flicker["segment_seeds"])) == 2 and flicker["diffueraser_runs"] == 2
    assert flicker["denoised_frames"] == FRAMES and flicker["scheme"] == "segments"
    assert result.info["hallucination"]["seed"] not in flicker["segment_seeds"]
    assert result.info["blur"]["processing_size"] == [128, 128]
    assert all(info["classical_approximation"] is False for info in result.info.values())
    for stage in ("propainter", "propainter_raft", "propainter_transformer", "hallucination", "flicker"):
        assert result.timings[stage] > 0, stage


def test_flicker_segment_k_is_the_seeded_run_on_segment_k(backend, first):
    import torch

    clip, result = first
    prior = result.negatives["blur"]  # ProPainter's raw result is the flicker prior
    info = result.info["flicker"]
    for (start, stop), seed in zip(info["segments"], info["segment_seeds"]):
        with torch.inference_mode():
            alone, _ = backend.diffueraser.run(clip.frames[start:stop], clip.hole[start:stop],
                                               prior[start:stop], seed)
        assert np.array_equal(result.negatives["flicker"][start:stop], alone)


def test_pcm_lora_and_scheduler_are_loaded(backend):
    runner = backend.diffueraser
    names = [n for n, _ in runner.pipeline.unet.named_parameters()]
    assert any("lora" in n for n in names), "the PCM LoRA did not reach the motion UNet"
    assert type(runner.pipeline.scheduler).__name__ == "TCDScheduler" and runner.steps == 2
    assert runner.pcm_file.endswith("sd15/pcm_sd15_smallcfg_2step_converted.safetensors")
    settings = backend.settings()
    assert settings["dtype"] == "float32" and settings["device_type"] == "cpu"


def test_key_frame_pass_with_prior_is_deterministic(backend):
    import torch

    clip = make_clip(frames=9)  # 9 > 2 * nframes: DiffuEraser's key-frame pass runs
    prior = clip.frames[:, ::-1].copy()
    with torch.inference_mode():
        out, run = backend.diffueraser.run(clip.frames, clip.hole, prior, seed=5)
        again, _ = backend.diffueraser.run(clip.frames, clip.hole, prior, seed=5)
    assert run.key_frames == [0, 2, 4, 6] and run.window == 4 and run.with_prior
    assert out.shape == clip.frames.shape and np.array_equal(out, again)


def test_global_rng_is_left_alone(backend):
    import torch

    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    backend.generate(make_clip(), ["hallucination"])
    assert torch.equal(torch.rand(3), expected)


def test_too_small_clip_for_propainter_fails_clearly(backend):
    clip = make_clip()
    small = Clip(name="small", frames=clip.frames[:, :96, :96].copy(), hole=clip.hole[:, :96, :96].copy(), seed=1)
    with pytest.raises(ValueError, match="RAFT needs at least 128 px"):
        backend.generate(small, ["blur"])


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def _capturing_video_writer(sink: list):
    """A stand-in for cv2.VideoWriter that keeps, as RGB, the frames forward() would encode."""
    import cv2

    class CapturingWriter:
        def __init__(self, *args):
            pass

        def write(self, frame):
            sink.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))

        def release(self):
            pass

    return CapturingWriter


def test_propainter_driver_matches_propainter_forward(backend, tmp_path, monkeypatch):
    """Our in-memory ProPainter equals ProPainter's own file-based forward() on the same input.

    At ratio 1.0 neither side resizes; ``subvideo_length=4`` makes both chunk the flow
    completion and the image propagation and run the pre-propagation of long clips.
    """
    if importlib.util.find_spec("matplotlib") is None or importlib.util.find_spec("requests") is None:
        pytest.skip("propainter.inference imports matplotlib and requests")
    import torch

    from regdpo.backends.models_propainter import ProPainterRunner, ProPainterSettings
    from regdpo.backends.models_source import import_source
    from regdpo.frames import write_mask, write_rgb

    inference = pytest.importorskip("propainter.inference")
    clip = make_clip()
    frames, hole = clip.frames[:, 16:144, 16:144].copy(), clip.hole[:, 16:144, 16:144].copy()
    (tmp_path / "frames").mkdir()
    (tmp_path / "masks").mkdir()
    for t in range(len(frames)):  # lossless PNG folders: forward() reads frame folders with cv2
        write_rgb(tmp_path / "frames" / f"{t:05d}.png", frames[t])
        write_mask(tmp_path / "masks" / f"{t:05d}.png", hole[t])

    captured: list[np.ndarray] = []
    monkeypatch.setattr(inference.cv2, "VideoWriter", _capturing_video_writer(captured))
    model_dir = backend.config.propainter_model_dir
    kwargs = dict(mask_dilation=2, ref_stride=10, neighbor_length=10, subvideo_length=4, raft_iter=1)
    with torch.no_grad():
        original = inference.Propainter(model_dir, device=torch.device("cpu"))
        original.forward(str(tmp_path / "frames"), str(tmp_path / "masks"), str(tmp_path / "out.mp4"),
                         resize_ratio=1.0, fp16=False, **kwargs)
    settings = ProPainterSettings(resize_ratio=1.0, mask_dilation=2, raft_iter=1, subvideo_length=4,
                                  neighbor_length=10, ref_stride=10)
    ours = ProPainterRunner(import_source(DE_REPO), model_dir, torch.device("cpu"), half=False, settings=settings)
    with torch.inference_mode():
        mine = ours.run(frames, hole)
    assert len(captured) == len(frames)
    reference = np.stack(captured)
    assert reference.shape == mine.shape
    assert np.array_equal(reference, mine), np.abs(reference.astype(int) - mine.astype(int)).max()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_inpaint_negative_equals_diffueraser_forward(fp16_backend, tmp_path, monkeypatch):
    """The generator's ``inpaint`` negative equals DiffuEraser's own forward() on the same input, byte
    for byte (``generate`` on the backend as ``regdpo generate`` builds it, not a driver built apart).

    forward() needs >= 22 frames, a side >= 256 px, fp16 (hard-coded) and files: its readers and
    writer are replaced by in-memory stand-ins, the mask given to it is the stored hole dilated
    once (its erode-once step gives the stored hole back), ``mask_dilation_iter=0`` and
    ``blended=False`` so its output is our raw output composited with the stored hole. With
    ``nframes=4`` the key-frame pass runs. forward() draws from the global RNG unseeded, so the
    test seeds it just before.
    """
    import sys

    import cv2
    import torch
    import torchvision.io

    from regdpo.backends.models import inpaint_seed
    from regdpo.frames import composite

    if DE_REPO is not None and str(DE_REPO) not in sys.path:
        sys.path.insert(0, str(DE_REPO))
    dd = pytest.importorskip("diffueraser.diffueraser")
    num, height, width, fps = 22, 64, 256, 11.0
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (height, width + 4 * num, 3), dtype=np.uint8)
    frames = np.stack([base[:, 4 * t:4 * t + width] for t in range(num)])
    hole = np.zeros((num, height, width), bool)
    for t in range(num):
        hole[t, 10 + t:40 + t, 80:200] = True
    prior = np.ascontiguousarray(frames[:, ::-1])
    grown = [cv2.dilate(h.astype(np.uint8), np.ones((3, 3), np.uint8)) for h in hole]
    videos = {"mask.mp4": [np.repeat(g[..., None] * 255, 3, axis=2) for g in grown],
              "prior.mp4": [p[..., ::-1].copy() for p in prior]}  # cv2 gives BGR

    class Capture:
        def __init__(self, path):
            self.frames, self.i = list(videos[os.path.basename(path)]), 0

        def isOpened(self):
            return True

        def get(self, prop):
            return fps

        def read(self):
            self.i += 1
            return (True, self.frames[self.i - 1]) if self.i <= len(self.frames) else (False, None)

        def release(self):
            pass

    written: list[np.ndarray] = []
    monkeypatch.setattr(dd.cv2, "VideoCapture", Capture)
    monkeypatch.setattr(dd.cv2, "VideoWriter", _capturing_video_writer(written))
    monkeypatch.setattr(torchvision.io, "read_video",
                        lambda filename, pts_unit, end_pts: (torch.from_numpy(frames), None, {"video_fps": fps}),
                        raising=False)
    config = fp16_backend.config
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "PCM_Weights").symlink_to(config.pcm_weights_path)  # forward()'s fixed path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prior.mp4").touch()  # forward() deletes it after reading
    cpu = torch.device("cpu")
    clip = Clip(name="standard", frames=frames, hole=hole, seed=5)
    seed = inpaint_seed(clip.seed)
    original = dd.DiffuEraser(cpu, config.base_model_path, config.vae_path, config.diffueraser_path, ckpt="2-Step")
    torch.manual_seed(seed)
    with torch.no_grad():
        original.forward("video.mp4", "mask.mp4", "prior.mp4", "out.mp4", video_length=2, mask_dilation_iter=0,
                         nframes=4, seed=seed, blended=False)
    # the generator's own path: the backend's driver (built as ModelsBackend builds it), generate()'s
    # inference mode; only ProPainter's prior is given (the same prior forward() reads)
    monkeypatch.setattr(fp16_backend.propainter, "run", lambda *a, **k: prior)
    result = fp16_backend.generate(clip, ["inpaint"])
    assert result.info["inpaint"]["seed"] == seed and result.info["inpaint"]["key_frames"] and len(written) == num
    assert np.array_equal(composite(result.negatives["inpaint"], frames, hole), np.stack(written))


def test_fp16_on_cpu_runs_propainter_in_fp32(fp16_backend, first):
    """``--device cpu --model_precision fp16``: ProPainter in fp32 as ProPainter itself runs on the CPU (its
    deformable convolution segfaults in fp16 there), so the blur negative is the fp32 backend's."""
    import torch

    assert fp16_backend.propainter.half is False and fp16_backend.propainter.dtype == torch.float32
    assert fp16_backend.dtype == torch.float16  # DiffuEraser in fp16 as asked
    clip, result = first
    blur = fp16_backend.generate(clip, ["blur"])
    assert np.array_equal(blur.negatives["blur"], result.negatives["blur"])


def test_strengths_are_variants_made_by_the_models_mechanics(backend, first):
    """Below 1: hallucination starts from a mix with the noised prior, blur's ProPainter works at a
    larger size, flicker segments share part of their noise; 1.0 stays exactly the default."""
    clip, result = first
    varied = backend.generate(clip, ["hallucination", "blur", "flicker"],
                              {"hallucination": [1.0, 0.5], "blur": [0.0], "flicker": [0.0]})
    assert set(varied.negatives) == {"hallucination", "hallucination_s0.50", "blur_s0.00", "flicker_s0.00"}
    assert np.array_equal(varied.negatives["hallucination"], result.negatives["hallucination"])
    for stream, default in (("hallucination_s0.50", "hallucination"), ("blur_s0.00", "blur"),
                            ("flicker_s0.00", "flicker")):
        frames = varied.negatives[stream]
        assert frames.shape == clip.frames.shape and frames.dtype == np.uint8
        assert not np.array_equal(frames[clip.hole], result.negatives[default][clip.hole]), stream
    assert varied.info["hallucination_s0.50"]["fresh_noise_share"] == 0.5
    assert varied.info["blur_s0.00"]["resize_ratio"] == 1.0
    assert varied.info["flicker_s0.00"]["noise_correlation"] == 1.0
    again = backend.generate(clip, ["flicker"], {"flicker": [0.0]})
    assert np.array_equal(again.negatives["flicker_s0.00"], varied.negatives["flicker_s0.00"])


# ---------------------------------------------------------------------- the out-of-memory retry's reduced settings


@pytest.fixture(scope="module")
def wide_backend(tiny_paths):
    """A backend whose every reduced knob can go down: an 8-frame window, ProPainter above the clip size."""
    from regdpo.backends.models import ModelsBackend

    config = ModelsConfig(**tiny_paths, diffueraser_repo=DE_REPO, device="cpu", flicker_segments=2,
                          diffueraser_nframes=8, propainter_resize_ratio=1.2, propainter_raft_iter=1)
    be = ModelsBackend(config)
    yield be
    be.close()


def test_reduced_settings_run_through_the_real_modules(wide_backend, tmp_path):
    clip = make_clip(frames=8)
    normal = wide_backend.generate(clip, fmt.NEG_TYPES)
    reduced = wide_backend.generate(clip, fmt.NEG_TYPES, reduced=True)
    assert normal.reduced is None and normal.cuda_peak_memory_mb is None and reduced.cuda_peak_memory_mb is None
    assert reduced.reduced == {"propainter_resize_ratio": [1.2, 0.9], "propainter_subvideo_length": [50, 25],
                               "propainter_neighbor_length": [10, 5], "diffueraser_nframes": [8, 4]}
    for stream in ("hallucination", "inpaint"):  # the denoising window the UNet / BrushNet calls got
        assert (normal.info[stream]["window"], reduced.info[stream]["window"]) == (8, 4), stream
    assert (normal.info["blur"]["processing_size"], reduced.info["blur"]["processing_size"]) == ([192, 192], [144, 144])
    assert (reduced.info["blur"]["resize_ratio"], reduced.info["blur"]["neighbor_length"],
            reduced.info["blur"]["subvideo_length"]) == (0.9, 5, 25)
    for stream, frames in reduced.negatives.items():
        assert frames.shape == clip.frames.shape and frames.dtype == np.uint8, stream
        assert not np.array_equal(frames[clip.hole], clip.frames[clip.hole]), stream
    for stream in ("blur", "hallucination"):  # really another run, not the normal one relabelled
        assert not np.array_equal(reduced.negatives[stream], normal.negatives[stream]), stream
    assert wide_backend.settings()["diffueraser_nframes"] == 8  # the run's settings stay the normal ones

    meta = fmt.VideoMeta(name=clip.name, num_frames=clip.num_frames, height=SIZE, width=SIZE,
                         neg_types=list(fmt.NEG_TYPES), seed=clip.seed, negatives=reduced.info,
                         reduced={"after": "OutOfMemoryError: CUDA out of memory.", "settings": reduced.reduced})
    write_video_entry(tmp_path, meta, clip.frames, clip.hole, reduced.negatives)
    entry = fmt.read_video_meta(tmp_path, clip.name)
    fmt.validate_video_streams(tmp_path, entry)
    assert entry.reduced["settings"]["diffueraser_nframes"] == [8, 4]


def test_reduced_keeps_a_propainter_size_raft_can_work_at(backend):
    # 160 px at 0.8 is 128, RAFT's minimum: the reduced 0.6 would be 96, so the clip keeps 0.8
    result = backend.generate(make_clip(), ["blur"], reduced=True)
    assert result.reduced == {"propainter_subvideo_length": [50, 25], "propainter_neighbor_length": [10, 5]}
    assert result.info["blur"]["processing_size"] == [128, 128] and result.info["blur"]["neighbor_length"] == 5


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real-video fixtures not found at {DATA}")
def test_a_run_retries_an_oom_video_reduced_with_the_real_modules(wide_backend, tmp_path, monkeypatch):
    import torch

    from regdpo.generate.config import GenerateConfig
    from regdpo.generate.pipeline import run_generation
    from regdpo.generate.sources import discover_sources

    real_run, calls = wide_backend.diffueraser.run, []

    def run_once_out_of_memory(*args, **kwargs):
        calls.append(kwargs.get("nframes"))
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(wide_backend.diffueraser, "run", run_once_out_of_memory)
    sources = discover_sources(DATA / "DAVIS", None, None, "train", None, 30.0)[:1]
    config = GenerateConfig(output_dir=tmp_path / "dpo", backend="models", nframes=8, resolution=128, seed=1,
                            neg_types=("hallucination", "blur"), progress=False)
    config.check()
    summary = run_generation(config, wide_backend, sources, log=lambda m: None)
    assert [(o.status, o.reduced) for o in summary.outcomes] == [("written", True)]
    assert calls == [8, 4]
    meta = fmt.read_video_meta(config.output_dir, sources[0].name)
    assert meta.reduced["after"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 9.00 GiB"
    assert meta.reduced["settings"]["diffueraser_nframes"] == [8, 4] and meta.info("hallucination")["window"] == 4
    assert meta.generator["backend_settings"]["diffueraser_nframes"] == 8
    fmt.validate_video_streams(config.output_dir, meta)
