"""Settings of a Region-Reg-DPO step (typed, standard library only: the CLI checks them without torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import UsageError

TRAIN_MODULES = ("motion", "spatial", "both")
"""``motion``: the motion modules of ``unet_main`` (DiffuEraser's stage 2); ``spatial``: BrushNet and
the 2-D layers of ``unet_main`` (stage 1); ``both``: all of BrushNet and ``unet_main``."""

LATENT_SAMPLING = ("shared", "mean")
"""``shared``: one VAE posterior noise draw for winner and loser (``mean + std * eps``, the same
``eps``); ``mean``: the posterior mean (no sampling noise at all)."""

LOSS_FORMS = ("diff", "logratio")  # = regdpo.dpo.LOSS_FORMS (not imported: that module imports torch)


@dataclass
class DPOStepConfig:
    """What one DPO step computes (loss settings and the region weights).

    Defaults are the recipe that stabilised the public Region-Reg-DPO runs on DiffuEraser
    (docs/training.md): normalised log-ratio gaps, clipped and down-weighted loser gap,
    beta 10, a small SFT term and a winner anchor, region weights 1 / 0.75 / 0.05.
    """

    train_modules: str = "motion"
    loss_form: str = "logratio"
    beta_dpo: float = 10.0
    loser_clip: float | None = 1.0
    loser_weight: float = 0.25
    sft_weight: float = 0.05
    anchor_weight: float = 0.1
    w_hole: float = 1.0
    w_boundary: float = 0.75
    w_context: float = 0.05
    latent_sampling: str = "shared"
    use_pair_weights: bool = False
    """Scale each pair's DPO term by the batch's ``pair_weight`` (``regdpo select --weights``)."""

    def problems(self) -> list[str]:
        out = []
        if self.train_modules not in TRAIN_MODULES:
            out.append(f"--train_modules {self.train_modules!r}: choose one of {', '.join(TRAIN_MODULES)}")
        if self.loss_form not in LOSS_FORMS:
            out.append(f"--loss_form {self.loss_form!r}: choose one of {', '.join(LOSS_FORMS)}")
        if self.latent_sampling not in LATENT_SAMPLING:
            out.append(f"--latent_sampling {self.latent_sampling!r}: choose one of {', '.join(LATENT_SAMPLING)}")
        if not float(self.beta_dpo) > 0:
            out.append(f"--beta_dpo {self.beta_dpo}: must be > 0")
        for name in ("loser_weight", "sft_weight", "anchor_weight", "w_hole", "w_boundary", "w_context"):
            if not float(getattr(self, name)) >= 0:
                out.append(f"--{name} {getattr(self, name)}: must be >= 0")
        if float(self.w_hole) + float(self.w_boundary) + float(self.w_context) <= 0:
            out.append("--w_hole, --w_boundary, --w_context: at least one must be > 0")
        return out

    def check(self) -> "DPOStepConfig":
        problems = self.problems()
        if problems:
            raise UsageError("; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
