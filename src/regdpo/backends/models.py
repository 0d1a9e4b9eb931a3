"""The ``models`` backend: ProPainter + DiffuEraser negatives, in memory.

- ``blur``          ProPainter's result alone (it works at ``--propainter_resize_ratio`` of the
                    clip size and is resized back, so the fill is soft and textureless).
- ``hallucination`` DiffuEraser with no prior: the denoising starts from pure seeded noise, so
                    the hole gets plausible-looking content the clip does not support.
- ``flicker``       DiffuEraser with ProPainter's result as prior, run segment by segment with a
                    different seed per segment and stitched in time: content jumps at each
                    segment boundary (``--flicker_scheme``, see ``flicker_plan``).
- ``inpaint``       DiffuEraser's standard inference: the ProPainter prior and one seed over the
                    whole clip (an on-policy negative: the model's own result; only when asked).
                    ``--inpaint_candidates N``: N such runs with their own seeds (candidate 0 with the
                    one-candidate seed), sharing the ProPainter run; one DiffuEraser call each (see
                    ``docs/models.md``: DiffuEraser's pipeline denoises one video per call).
- ``renoise``       the GT's latents noised to a level and denoised by DiffuEraser from there, with
                    the mask condition, inpaint's seed and its number of steps (``renoise_timesteps``):
                    the pair differs only where the model fails to restore the GT (LocalDPO, DenseDPO).
                    Strength 1.0 is ``inpaint`` itself (from pure noise; the same frames).

Per video, ProPainter runs once (its result is the blur negative and the flicker and inpaint
prior) and DiffuEraser runs once for hallucination, once for inpaint and once per flicker segment; nothing is decoded or
encoded twice and nothing touches disk. Models load once per process (``__init__``) and stay
on the device; ``close()`` frees them. The DiffuEraser code is imported only when the backend
is constructed. Returned frames are raw; the pipeline composites them onto the GT with the
stored mask.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import UsageError
from ..format import NEG_TYPES, stream_name
from ..seeding import derive_seed
from .base import BackendResult, Clip, NegativeBackend, candidate_count, plan_segments, requested_streams
from .models_config import MemoryReduction, ModelsConfig, oom_reduction

# ---------------------------------------------------------------------- pure helpers


def hallucination_seed(video_seed: int) -> int:
    """Seed of the hallucination run of a video."""
    return derive_seed(video_seed, "models", "hallucination")


def inpaint_seed(video_seed: int) -> int:
    """Seed of the inpaint run of a video (DiffuEraser's standard inference)."""
    return derive_seed(video_seed, "models", "inpaint")


def inpaint_candidate_seed(video_seed: int, candidate: int) -> int:
    """Seed of inpaint candidate ``k`` (``--inpaint_candidates``): candidate 0 is the one-candidate run's."""
    return inpaint_seed(video_seed) if candidate == 0 else derive_seed(video_seed, "models", "inpaint", candidate)


def renoise_timesteps(standard: Sequence[int], strength: float) -> list[int]:
    """The denoising timesteps of a renoise run at ``strength`` in [0, 1): the standard inference's
    (descending, e.g. PCM 2-step TCD ``[999, 499]``) scaled by ``strength`` and rounded, repeats dropped, so
    the GT's latents are noised to the first of them (``0.5``: ``[500, 250]``) and denoised in the same
    number of steps where they stay distinct (0: ``[0]``, one step from the clean latents)."""
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"renoise strength must be in [0, 1], got {strength}")
    out: list[int] = []
    for t in standard:
        value = int(round(float(t) * float(strength)))
        if not out or value < out[-1]:
            out.append(value)
    return out


def flicker_shared_seed(video_seed: int) -> int:
    """Seed of the noise that flicker segments share below strength 1."""
    return derive_seed(video_seed, "models", "flicker", "shared")


def blur_ratio(resize_ratio: float, strength: float) -> float:
    """ProPainter's working ratio for the blur negative: ``resize_ratio`` at strength 1, the clip's
    own size (1.0) at strength 0, linear in between (a ratio >= 1 stays as it is)."""
    if strength >= 1.0 or resize_ratio >= 1.0:
        return float(resize_ratio)
    return round(1.0 + float(strength) * (float(resize_ratio) - 1.0), 4)


def flicker_seeds(video_seed: int, num_segments: int) -> list[int]:
    """One seed per flicker segment; distinct from each other and from the hallucination seed."""
    seeds = [derive_seed(video_seed, "models", "flicker", k) for k in range(num_segments)]
    for k in range(1, num_segments):  # a 31-bit collision is unlikely, but a repeat would hide a boundary
        while seeds[k] in seeds[:k]:
            seeds[k] = derive_seed(seeds[k], "next")
    return seeds


def flicker_plan(num_frames: int, num_segments: int, scheme: str) -> list[dict[str, Any]]:
    """The DiffuEraser runs that make a flicker negative.

    Segments come from ``plan_segments`` (contiguous, sizes differ by at most one). Per segment
    ``k`` a run with its own seed; ``run`` is the frame range the run covers, ``take`` the range of
    the output kept (``segment`` = ``run[take]``):

    - ``segments``: the run covers the segment only (total work = one clip's worth of frames;
      a segment shorter than ``--diffueraser_nframes`` is denoised in one window of its length);
    - ``full_runs``: the run covers the whole clip and the segment is cut from it (work = one
      full run per segment, every segment denoised with the whole clip as context).
    """
    if scheme not in ("segments", "full_runs"):
        raise ValueError(f"unknown flicker scheme {scheme!r}")
    plan = []
    for start, stop in plan_segments(num_frames, num_segments):
        if scheme == "segments":
            plan.append({"segment": (start, stop), "run": (start, stop), "take": (0, stop - start)})
        else:
            plan.append({"segment": (start, stop), "run": (0, num_frames), "take": (start, stop)})
    return plan


def stitch_flicker(
    run: Callable[[int, int, int], np.ndarray],
    num_frames: int,
    plan: Sequence[dict[str, Any]],
    seeds: Sequence[int],
) -> np.ndarray:
    """Build the flicker negative: ``run(start, stop, seed)`` returns frames ``[stop-start, H, W, 3]``
    for clip frames ``[start, stop)``; segment ``k`` comes from the run with ``seeds[k]``."""
    if len(seeds) != len(plan):
        raise ValueError(f"{len(plan)} segments but {len(seeds)} seeds")
    out: np.ndarray | None = None
    for step, seed in zip(plan, seeds):
        (r0, r1), (t0, t1), (s0, s1) = step["run"], step["take"], step["segment"]
        frames = run(r0, r1, seed)
        if len(frames) != r1 - r0:
            raise RuntimeError(f"run over frames {r0}:{r1} returned {len(frames)} frames")
        if out is None:
            out = np.empty((num_frames, *frames.shape[1:]), dtype=frames.dtype)
        out[s0:s1] = frames[t0:t1]
    assert out is not None
    return out


# ---------------------------------------------------------------------- the backend


class ModelsBackend(NegativeBackend):
    """ProPainter + DiffuEraser negatives (see the module doc). Load once, call ``generate`` per video."""

    name = "models"
    supported_types = NEG_TYPES
    supports_candidates = True

    def __init__(self, config: ModelsConfig, reduction: MemoryReduction | None = None, *, propainter: bool = True):
        """``reduction``: the settings of the out-of-memory retry (``generate(..., reduced=True)``), default
        ``MemoryReduction()``; none with ``config.oom_retry == "off"`` (a video out of memory then fails).
        ``propainter=False``: ProPainter is not loaded (``self.propainter`` is None); every ``generate`` that needs
        the prior must then be given it (``prior=``), and blur cannot be made (``regdpo eval``'s models share
        one ProPainter and its cached priors, ``regdpo.evaluation.priors``)."""
        config.check()
        reduction = oom_reduction(config, reduction)  # every path, file, module and flag, before any model loads
        import torch

        from .models_diffueraser import DiffuEraserRunner
        from .models_source import import_source

        self.config = config
        self._torch = torch
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.model_precision, self.device)
        started = time.perf_counter()
        source = import_source(config.diffueraser_repo)
        self.propainter_settings = propainter_settings(config)
        self.reduction = reduction
        self.reduced_changes = reduction.changes(config) if reduction is not None else {}
        self.reduced_propainter_settings = propainter_settings(reduction.apply(config)) if reduction else None
        # Built outside inference mode, as DiffuEraser builds its own (weights cast to fp16 under
        # torch.inference_mode() gave +-1 in 12 % of the inpaint negative's hole pixels against
        # DiffuEraser's standard inference); the runs are under inference mode (generate).
        # ProPainter runs fp32 on the CPU whatever --model_precision, as ProPainter itself does (its
        # deformable convolution crashes in fp16 on the CPU).
        self.propainter = (load_propainter(source, config, self.device, self.dtype, self.propainter_settings)
                           if propainter else None)
        self.diffueraser = DiffuEraserRunner(
            source, base_model_path=config.base_model_path, vae_path=config.vae_path,
            diffueraser_path=config.diffueraser_path, pcm_weights_path=config.pcm_weights_path,
            pcm_ckpt=config.pcm_ckpt, device=self.device, dtype=self.dtype,
            nframes=int(config.diffueraser_nframes),
        )
        self.load_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ API
    @property
    def reducible(self) -> bool:  # type: ignore[override]
        """Whether the out-of-memory retry changes anything (every knob may already be at its minimum)."""
        return bool(self.reduced_changes)

    def settings(self) -> dict[str, Any]:
        import diffusers

        c = self.config
        return {
            "classical_approximation": False,
            "device_type": self.device.type,  # not the index: shards on cuda:0 and cuda:1 make the same data
            "dtype": str(self.dtype).replace("torch.", ""),
            "pcm_ckpt": c.pcm_ckpt,
            "pcm_file": self.diffueraser.pcm_file,
            "num_inference_steps": self.diffueraser.steps,
            "guidance_scale": self.diffueraser.guidance_scale,
            "diffueraser_nframes": int(c.diffueraser_nframes),
            "diffueraser_use_prompt": bool(c.diffueraser_use_prompt),
            "flicker_scheme": c.flicker_scheme,
            "flicker_segments": int(c.flicker_segments),
            "diffueraser_weights": {"sha256": self.diffueraser.weights_sha256,
                                    "files": self.diffueraser.weights_files},
            "propainter": asdict(self.propainter_settings),
            "paths": {k: getattr(c, k) for k in ("base_model_path", "vae_path", "diffueraser_path",
                                                 "propainter_model_dir", "pcm_weights_path", "diffueraser_repo")},
            "versions": {"torch": self._torch.__version__, "diffusers": diffusers.__version__},
        }

    def generate(self, clip: Clip, neg_types: Sequence[str],
                 strengths: Mapping[str, Sequence[float]] | None = None, *, reduced: bool = False,
                 candidates: Mapping[str, int] | None = None, prior: np.ndarray | None = None) -> BackendResult:
        """The negatives of ``clip``. ``reduced``: at the reduced settings (``MemoryReduction``; the generator's
        retry after a CUDA out-of-memory error), recorded in ``BackendResult.reduced``. ``candidates``:
        ``{"inpaint": N}`` draws N inpaint negatives (streams ``inpaint``, ``inpaint_c1``, ...). ``prior``:
        ProPainter's result for this clip at the backend's settings (``uint8 [T, H, W, 3]``, as
        ``self.propainter.run(frames, hole)`` returns it), computed earlier: used instead of running ProPainter
        (no ``propainter`` timings then); not with ``reduced``, whose ProPainter settings differ."""
        torch = self._torch
        requests = requested_streams(neg_types, strengths)
        frames, hole = clip.frames, clip.hole
        num, height, width = hole.shape
        if height % 8 or width % 8:
            raise ValueError(f"{clip.name}: frame size {width}x{height} is not a multiple of 8")
        result = BackendResult()
        timings = result.timings
        prompt = clip.prompt if self.config.diffueraser_use_prompt else ""
        common = {"classical_approximation": False, "steps": self.diffueraser.steps, "pcm_ckpt": self.config.pcm_ckpt}
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        pp, nframes, changes = self._run_settings(reduced, width, height)
        ratio0 = pp.resize_ratio
        needs_prior = any(t in ("flicker", "inpaint") or (t == "blur" and blur_ratio(ratio0, s) == ratio0)
                          or (t == "hallucination" and s < 1.0) or (t == "renoise" and s >= 1.0)
                          for t, s, _ in requests)
        inpainted: dict[str, Any] = {}  # candidate 0's frames and run, when made (renoise at 1.0 is it)
        try:
            with torch.inference_mode():
                if prior is not None:
                    if reduced:
                        raise ValueError("a precomputed prior is made at the normal settings, not the reduced ones")
                    prior = np.asarray(prior)
                    if prior.shape != frames.shape or prior.dtype != np.uint8:
                        raise ValueError(f"{clip.name}: the prior is {prior.dtype} {prior.shape}, expected uint8 "
                                         f"{frames.shape}")
                elif needs_prior:
                    if self.propainter is None:
                        raise ValueError("this models backend was built without ProPainter: give the prior")
                    stages: dict[str, float] = {}
                    t0 = time.perf_counter()
                    prior = self.propainter.run(frames, hole, stages, settings=pp)
                    timings["propainter"] = time.perf_counter() - t0
                    timings.update(stages)
                for neg_type, strength, stream in requests:
                    t0 = time.perf_counter()
                    if neg_type == "blur":
                        ratio = blur_ratio(ratio0, strength)
                        if ratio == ratio0:
                            assert prior is not None
                            out = prior
                        elif self.propainter is None:
                            raise ValueError("this models backend was built without ProPainter: no blur at "
                                             f"ratio {ratio}")
                        else:
                            out = self.propainter.run(frames, hole, {}, resize_ratio=ratio, settings=pp)
                        pw, ph = _processing_size(width, height, ratio)
                        result.negatives[stream] = out
                        result.info[stream] = {
                            "classical_approximation": False,
                            "method": "ProPainter result alone (RAFT flows, flow completion, propagation, "
                                      "transformer), at reduced size and resized back",
                            "processing_size": [pw, ph],
                            **asdict(pp),
                            **({"resize_ratio": ratio} if ratio != ratio0 else {}),
                        }
                    elif neg_type == "hallucination":
                        seed = hallucination_seed(clip.seed)
                        if strength >= 1.0:
                            out, run = self.diffueraser.run(frames, hole, None, seed, prompt, nframes=nframes)
                            how = "DiffuEraser without prior: start = seeded unit Gaussian latents over the clip"
                        else:
                            out, run = self.diffueraser.run(frames, hole, prior, seed, prompt, fresh_share=strength,
                                                            nframes=nframes)
                            how = ("DiffuEraser from a start that mixes the noised ProPainter prior with fresh "
                                   "seeded noise (share of fresh noise = strength; unit variance)")
                        result.negatives[stream] = out
                        result.info[stream] = {
                            **common,
                            "method": how,
                            "seed": seed,
                            "window": run.window,
                            "key_frames": run.key_frames,
                            "diffueraser_runs": 1,
                            **({"fresh_noise_share": strength} if strength < 1.0 else {}),
                        }
                    elif neg_type == "flicker":
                        assert prior is not None
                        result.negatives[stream], result.info[stream] = self._flicker(
                            clip, prior, prompt, strength, common, nframes)
                    elif neg_type == "inpaint":
                        assert prior is not None
                        for k in range(candidate_count(candidates, "inpaint")):
                            t0 = time.perf_counter()
                            name = stream_name("inpaint", strength, k)
                            result.negatives[name], result.info[name] = self._inpaint(clip, prior, prompt, k, common,
                                                                                      nframes, inpainted)
                            if k:
                                timings[name] = time.perf_counter() - t0
                    elif neg_type == "renoise":
                        if strength >= 1.0:  # from pure noise: inpaint's run, the same frames
                            assert prior is not None
                            out, info = self._inpaint(clip, prior, prompt, 0, common, nframes, inpainted)
                            info = {**info, "same_as": "inpaint"}
                        else:
                            seed = inpaint_seed(clip.seed)
                            steps = renoise_timesteps(self.diffueraser.standard_timesteps, strength)
                            out, run = self.diffueraser.run(frames, hole, None, seed, prompt, nframes=nframes,
                                                            renoise_timesteps=steps)
                            info = {
                                **common,
                                "method": "the GT's latents noised to the first timestep and denoised by DiffuEraser "
                                          "with the mask condition, inpaint's seed and as many steps",
                                "seed": seed,
                                "timesteps": steps,
                                "window": run.window,
                                "key_frames": run.key_frames,
                                "diffueraser_runs": 1,
                            }
                        result.negatives[stream], result.info[stream] = out, info
                    if neg_type != "blur" or stream != neg_type:
                        timings[stream] = time.perf_counter() - t0
                if cuda:
                    result.cuda_peak_memory_mb = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
                if reduced:  # the settings of the models that ran
                    ran = ({"propainter"} if "propainter" in timings or any(r[0] == "blur" for r in requests) else set())
                    ran |= {"diffueraser"} if any(r[0] != "blur" for r in requests) else set()
                    result.reduced = {k: v for k, v in changes.items() if k.split("_")[0] in ran}
        finally:
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        return result

    def _run_settings(self, reduced: bool, width: int, height: int):
        """(ProPainter settings, DiffuEraser window, ``{flag: [normal, reduced]}``) of a run on a clip of this size.
        A reduced ProPainter working size too small for RAFT keeps the normal one."""
        if not reduced:
            return self.propainter_settings, int(self.config.diffueraser_nframes), {}
        if not self.reducible:
            raise ValueError("the models backend has no reduced settings left to run at (every knob at its minimum)")
        from .models_propainter import MIN_SIDE, processing_size

        pp, changes = self.reduced_propainter_settings, dict(self.reduced_changes)
        if min(processing_size(width, height, pp.resize_ratio)) < MIN_SIDE <= min(
                processing_size(width, height, self.propainter_settings.resize_ratio)):
            pp = replace(pp, resize_ratio=self.propainter_settings.resize_ratio)
            changes.pop("propainter_resize_ratio", None)
        nframes = int(changes.get("diffueraser_nframes", [0, self.config.diffueraser_nframes])[1])
        return pp, nframes, changes

    def _inpaint(self, clip: Clip, prior: np.ndarray, prompt: str, candidate: int, common: dict[str, Any],
                 nframes: int, made: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Inpaint candidate ``candidate``: DiffuEraser's standard inference with its seed (candidate 0's
        frames kept in ``made`` for renoise at strength 1.0, which is the same run)."""
        if candidate == 0 and "frames" in made:
            return made["frames"], dict(made["info"])
        seed = inpaint_candidate_seed(clip.seed, candidate)
        out, run = self.diffueraser.run(clip.frames, clip.hole, prior, seed, prompt, nframes=nframes)
        info = {
            **common,
            "method": "DiffuEraser's standard inference: ProPainter prior, one seed, whole clip",
            "seed": seed,
            "window": run.window,
            "key_frames": run.key_frames,
            "diffueraser_runs": 1,
        }
        if candidate == 0:
            made.update(frames=out, info=info)
        return out, info

    def _flicker(self, clip: Clip, prior: np.ndarray, prompt: str, strength: float,
                 common: dict[str, Any], nframes: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The flicker negative at ``strength``: segment noises of correlation ``1 - strength``."""
        frames, hole = clip.frames, clip.hole
        num = hole.shape[0]
        segments = int(self.config.flicker_segments)
        if segments > num:
            raise ValueError(f"{clip.name}: --flicker_segments {segments} exceeds the clip's {num} frames")
        plan = flicker_plan(num, segments, self.config.flicker_scheme)
        seeds = flicker_seeds(clip.seed, segments)
        shared = None if strength >= 1.0 else (flicker_shared_seed(clip.seed), float(strength))
        runs = []

        def run_part(start: int, stop: int, seed: int) -> np.ndarray:
            out, run = self.diffueraser.run(frames[start:stop], hole[start:stop], prior[start:stop], seed, prompt,
                                            shared_noise=shared, nframes=nframes)
            runs.append(run)
            return out

        out = stitch_flicker(run_part, num, plan, seeds)
        info = {
            **common,
            "method": "DiffuEraser with the ProPainter prior, one seed per segment, stitched in time",
            "scheme": self.config.flicker_scheme,
            "num_segments": segments,
            "segments": [list(p["segment"]) for p in plan],
            "segment_seeds": seeds,
            "windows": [r.window for r in runs],
            "key_frames": [r.key_frames for r in runs],
            "diffueraser_runs": len(runs),
            "denoised_frames": int(sum(r.num_frames for r in runs)),
        }
        if shared is not None:
            info.update(shared_noise_seed=shared[0], noise_correlation=round(1.0 - strength, 4),
                        method="DiffuEraser with the ProPainter prior, one seed per segment, stitched in time; "
                        "segment noises = unit-variance mix of one shared noise and their own")
        return out, info

    def close(self) -> None:
        for name in ("propainter", "diffueraser"):
            runner = getattr(self, name, None)
            if runner is not None:
                runner.close()
                delattr(self, name)
        gc.collect()
        if getattr(self, "device", None) is not None and self.device.type == "cuda":
            self._torch.cuda.empty_cache()


# ---------------------------------------------------------------------- device / precision


def resolve_device(name: str):
    """``torch.device`` for ``--device`` (``auto`` = CUDA when available); ``UsageError`` if unusable."""
    import torch

    name = str(name or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available to torch {torch.__version__}; "
                             "use --device cpu (slow) or a machine with a GPU")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        return device
    if name == "cpu":
        return torch.device("cpu")
    raise UsageError(f"--device {name!r}: use cuda, cuda:N, cpu or auto")


def resolve_dtype(precision: str, device):
    """fp16 on CUDA and fp32 on CPU for ``auto``; else as asked."""
    import torch

    if precision == "fp16" or (precision == "auto" and device.type == "cuda"):
        return torch.float16
    return torch.float32


def load_propainter(source: Any, config: ModelsConfig, device: Any, dtype: Any, settings: Any):
    """ProPainter's three networks as the models backend loads them: from ``config.propainter_model_dir``, fp32
    on the CPU whatever ``--model_precision`` (as ProPainter itself runs; its deformable convolution crashes
    in fp16 on the CPU), fp16 on CUDA when ``dtype`` is. ``settings``: ``propainter_settings(config)``."""
    import torch

    from .models_propainter import ProPainterRunner

    return ProPainterRunner(source, config.propainter_model_dir, device,
                            half=dtype == torch.float16 and device.type != "cpu", settings=settings)


def propainter_settings(config: ModelsConfig):
    """ProPainter's inference settings from the backend's flags."""
    from .models_propainter import ProPainterSettings

    return ProPainterSettings(
        resize_ratio=float(config.propainter_resize_ratio),
        mask_dilation=int(config.propainter_mask_dilation),
        raft_iter=int(config.propainter_raft_iter),
        subvideo_length=int(config.propainter_subvideo_length),
        neighbor_length=int(config.propainter_neighbor_length),
        ref_stride=int(config.propainter_ref_stride),
    )


def _processing_size(width: int, height: int, ratio: float) -> tuple[int, int]:
    from .models_propainter import processing_size

    return processing_size(width, height, ratio)
