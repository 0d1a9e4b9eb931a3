"""``--report_to tensorboard|wandb|none``: the step diagnostics and the validation figures through
``accelerate``'s trackers, as diffusers' training scripts log them.

``none`` (the default) logs nothing beyond ``metrics.jsonl``. ``tensorboard`` writes event files under
``{output_dir}/logs/{TRACKER_PROJECT}/`` (needs ``tensorboard`` or ``tensorboardX``); ``wandb`` logs to the
project ``TRACKER_PROJECT`` (needs ``wandb`` and its login; offline with ``WANDB_MODE=offline``). The
package is checked before any model loads: absent, the run stops with one line.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Mapping

REPORT_TO = ("none", "tensorboard", "wandb")
TRACKER_PROJECT = "region-reg-dpo"
LOGGING_DIR = "logs"

_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def report_to_problem(report_to: str) -> str | None:
    """Why ``--report_to report_to`` cannot work here (its package is absent), or ``None``."""
    if report_to == "none":
        return None
    if report_to not in _PACKAGES:
        return f"--report_to {report_to}: use one of {', '.join(REPORT_TO)}"
    if any(importlib.util.find_spec(name) is not None for name in _PACKAGES[report_to]):
        return None
    wanted = " or ".join(_PACKAGES[report_to])
    return f"--report_to {report_to}: the {wanted} package is not installed (pip install {_PACKAGES[report_to][0]})"


def log_with(report_to: str) -> str | None:
    """``Accelerator(log_with=...)``."""
    return None if report_to == "none" else report_to


def logging_dir(output_dir: Path) -> Path:
    return Path(output_dir) / LOGGING_DIR


def tracker_config(args: Mapping[str, Any]) -> dict[str, Any]:
    """The run's flags as tracker hyper-parameters: scalars and strings only (TensorBoard's hparams refuse
    ``None`` and lists)."""
    return {k: v for k, v in sorted(args.items()) if isinstance(v, (bool, int, float, str))}


def scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric fields of a ``metrics.jsonl`` record (``step`` left out), as floats, keys prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (bool, int, float)) and v is not None}
