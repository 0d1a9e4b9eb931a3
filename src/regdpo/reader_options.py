"""The options both dataset readers take from ``args`` (the folder ``DPODataset`` and the shard reader
``PackedDPODataset``), each checked with a ``UsageError`` naming the attribute: one policy for both."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from . import format as fmt
from .crops import DEFAULT_MIN_HOLE_COVERAGE
from .errors import UsageError
from .items import DEFAULT_PROMPT, VAE_SCALE, ItemOptions, full_frame_size, resized_size


def option(args: Any, name: str, default: Any) -> Any:
    value = getattr(args, name, default)
    return default if value is None else value


def required_option(args: Any, name: str) -> Any:
    value = getattr(args, name, None)
    if value is None:
        raise UsageError(f"args.{name} is required by DPODataset")
    return value


def int_option(args: Any, name: str, value: Any, minimum: int) -> int:
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"args.{name} must be an integer, got {value!r}") from None
    if as_int != value or as_int < minimum:
        raise UsageError(f"args.{name} must be an integer >= {minimum}, got {value!r}")
    return as_int


def parse_neg_types(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s) for s in value]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in fmt.NEG_TYPES]
    if unknown or not names:
        raise UsageError(
            f"args.neg_types: unknown negative type(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"known: {', '.join(fmt.NEG_TYPES)}"
        )
    return tuple(t for t in fmt.NEG_TYPES if t in names)


def summarise_problems(problems: Sequence[str], limit: int = 5) -> str:
    shown = "; ".join(problems[:limit])
    return shown + (f"; ... and {len(problems) - limit} more" if len(problems) > limit else "")


def item_options(args: Any) -> ItemOptions:
    """The checked item options of ``args`` (``UsageError`` naming the attribute); shared by both readers."""
    nframes = int_option(args, "nframes", required_option(args, "nframes"), 1)
    resolution = int_option(args, "resolution", required_option(args, "resolution"), VAE_SCALE)
    if resolution % VAE_SCALE:
        raise UsageError(f"args.resolution must be a multiple of {VAE_SCALE}, got {resolution}")
    boundary_dilation = int_option(args, "boundary_dilation", option(args, "boundary_dilation", 7), 1)
    if boundary_dilation % 2 == 0:
        raise UsageError(f"args.boundary_dilation must be odd (a centred square kernel), got {boundary_dilation}")
    proportion_empty_prompts = float(option(args, "proportion_empty_prompts", 0.0))
    if not 0.0 <= proportion_empty_prompts <= 1.0:
        raise UsageError(f"args.proportion_empty_prompts must be in [0, 1], got {proportion_empty_prompts}")
    min_hole_coverage = float(option(args, "min_hole_coverage", DEFAULT_MIN_HOLE_COVERAGE))
    if not 0.0 <= min_hole_coverage <= 1.0:
        raise UsageError(f"args.min_hole_coverage must be in [0, 1], got {min_hole_coverage}")
    return ItemOptions(
        nframes=nframes, resolution=resolution, boundary_dilation=boundary_dilation,
        proportion_empty_prompts=proportion_empty_prompts, center_crop=bool(option(args, "center_crop", False)),
        full_frame=bool(option(args, "full_frame", False)), min_hole_coverage=min_hole_coverage,
        random_flip=bool(option(args, "random_flip", False)), random_reverse=bool(option(args, "random_reverse", False)),
        default_prompt=str(option(args, "default_prompt", DEFAULT_PROMPT)),
    )


def dataset_seed(args: Any) -> int | None:
    """``args.dataset_seed`` checked. Its own attribute: a training script's ``args.seed`` must not switch
    seeded sampling on (with it, an epoch without ``set_epoch`` would repeat the previous one's draws)."""
    seed = getattr(args, "dataset_seed", None)
    return None if seed is None else int_option(args, "dataset_seed", seed, 0)


DEFAULT_MAX_UPSCALE = 1.25
"""Most a stored video is enlarged to ``resolution`` (``args.max_upscale``): the generator's ``--max_upscale``
default, one policy for both (an enlarged GT is a soft winner the model learns to prefer)."""


def upscale_of(height: int, width: int, resolution: int, full_frame: bool = False) -> float:
    """How much an item at ``resolution`` enlarges a stored ``height x width`` video (the larger of the two
    axes' factors; <= 1: no enlargement)."""
    rh, rw = (full_frame_size if full_frame else resized_size)(height, width, resolution)
    return max(rh / height, rw / width)


def check_tokenizer(tokenizer: Any) -> Callable[..., Any]:
    if tokenizer is None or not callable(tokenizer) or not hasattr(tokenizer, "model_max_length"):
        raise UsageError("DPODataset needs a tokenizer (callable, with model_max_length), e.g. CLIPTokenizer")
    return tokenizer
