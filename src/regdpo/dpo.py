"""Region-Reg-DPO loss, pure torch (no model code, no I/O).

Conventions: every function is shape-polymorphic over a leading batch dimension ``B`` (one
entry per pair, i.e. per video) and computes in float32 whatever the input dtype (fp16 MSE
differences of ~6e-4 on values of ~1.2 would otherwise round away). Outputs are float32.

Terms (per pair; ``mse_*`` of the policy, ``ref_*`` of the frozen reference, ``w`` winner, ``l`` loser):

- form ``"diff"`` (Diffusion-DPO)::

      gap_w  = mse_w - ref_w            gap_l = min(mse_l - ref_l, loser_clip)
      inside = -0.5 * beta * (gap_w - loser_weight * gap_l)

- form ``"logratio"`` (normalised, scale-free)::

      gap_w  = log(mse_w / ref_w)       gap_l = min(log(mse_l / ref_l), loser_clip)
      inside = -0.5 * beta * (gap_w - loser_weight * gap_l)

- ``loss = mean(pair_weight * -logsigmoid(inside)) + sft_weight * mean(mse_w) + anchor_weight * mean(relu(gap_w))``
  (``pair_weight`` 1 per pair unless given: ``regdpo select --weights``, ``--use_pair_weights``).

With policy == reference every gap is 0, ``inside`` is 0 and the DPO term is exactly ``ln 2``
(``mean(pair_weight) * ln 2`` with pair weights).
``loser_clip`` (``None``: no clip) caps the reward the policy can earn by making the loser worse.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["region_weights", "region_mse", "dpo_loss", "diagnostics_to_floats", "LOSS_FORMS", "DIAGNOSTICS",
           "ACC_MARGIN"]

LOSS_FORMS = ("diff", "logratio")

DIAGNOSTICS: dict[str, str] = {
    "loss": "the total loss (DPO term + SFT term + anchor term)",
    "dpo_loss": "mean(-logsigmoid(inside)); ln 2 = 0.6931 when policy == reference",
    "sft_loss": "mean(mse_w), the winner's region-weighted denoising MSE (before sft_weight)",
    "anchor_loss": "mean(relu(gap_w)): how much the winner got worse than the reference (before anchor_weight)",
    "implicit_acc": "share of pairs with inside > 0 (the policy prefers the winner more than the reference "
                    "does); ties count one half: inside == 0, or both policy MSEs within a relative 1e-6 of the "
                    "reference's (equal up to float32 rounding, as at step 0)",
    "implicit_acc_margin": "share of pairs with inside > ACC_MARGIN = 0.1: the policy prefers the winner by a margin "
                           "(implied preference sigmoid(inside) > 0.525), not by float noise; the saturation "
                           "warning reads this one",
    "inside_term_mean": "mean of inside = -0.5 * beta * (gap_w - loser_weight * gap_l)",
    "inside_term_min": "min of inside over the batch",
    "inside_term_max": "max of inside over the batch",
    "win_gap": "mean(mse_w - ref_w), in MSE units whatever the form; < 0: the winner is denoised better",
    "lose_gap": "mean(mse_l - ref_l), in MSE units (unclipped); > 0: the loser is denoised worse",
    "mse_w": "mean policy MSE on the winner",
    "mse_l": "mean policy MSE on the loser",
    "ref_mse_w": "mean reference MSE on the winner",
    "ref_mse_l": "mean reference MSE on the loser",
    "loser_dominant_ratio": "among correctly ranked pairs (inside > 0, not a tie), the share whose loser got worse "
                            "(max(0, mse_l - ref_l)) by more than the winner got better (max(0, ref_w - mse_w)); "
                            "0 when no pair is correctly ranked",
}
"""Every key of ``dpo_loss``'s diagnostics, with its definition (docs/training.md shows the same)."""

_EPS = 1e-12
TIE_RTOL = 1e-6
"""A pair is a tie when both policy MSEs equal the reference's to this relative tolerance: the
policy and reference passes of one model differ by float32 rounding (~1e-7 relative), which must
not read as an implicit accuracy of 0 or 1 at step 0."""


ACC_MARGIN = 0.1
"""The margin of ``implicit_acc_margin``, in units of ``inside`` (the log-odds of the policy's implied
preference for the winner over the reference's): a pair counts when ``sigmoid(inside) > 0.525``, its
DPO term below ``0.644`` (``ln 2 = 0.693`` at a tie). Float noise between the policy and reference passes
of nearly equal weights gives ``inside`` of ~1e-4 (tiny random weights, a few steps), three orders
of magnitude below; a saturated run (``dpo_loss`` near 0) has ``inside`` of several units."""


def region_weights(hole: torch.Tensor, boundary: torch.Tensor, context: torch.Tensor,
                   w_hole: float = 1.0, w_boundary: float = 0.75, w_context: float = 0.05) -> torch.Tensor:
    """Per-cell loss weights ``w_hole * hole + w_boundary * boundary + w_context * context`` (float32).

    The three masks are the dataset's disjoint latent regions (``mask_*_latent``, 1 inside,
    e.g. ``[B, F, 1, h, w]``); the result has their shape.
    """
    for name, w in (("w_hole", w_hole), ("w_boundary", w_boundary), ("w_context", w_context)):
        if not (float(w) >= 0.0 and math.isfinite(float(w))):
            raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
    return (float(w_hole) * hole.float() + float(w_boundary) * boundary.float()
            + float(w_context) * context.float())


def region_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted MSE per entry of the leading dimension: ``sum(w * (pred - target)^2) / sum(w)``.

    ``pred``, ``target``: ``[B, ...]`` (e.g. ``[B, F, C, h, w]``); ``weights`` broadcasts to them
    (e.g. ``[B, F, 1, h, w]``: one weight per cell, shared by the channels; the sum of weights
    counts each channel). Returns float32 ``[B]``; an entry whose weights are all 0 gives 0.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.ndim < 1:
        raise ValueError("pred needs a leading batch dimension")
    w = torch.broadcast_to(weights.float(), pred.shape)
    err = (pred.float() - target.float()).square()
    dims = tuple(range(1, pred.ndim))
    num = (w * err).sum(dim=dims) if dims else w * err
    den = w.sum(dim=dims) if dims else w
    return num / den.clamp_min(_EPS)


def dpo_loss(model_w: torch.Tensor, model_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor,
             beta: float, form: str = "diff", loser_clip: float | None = None, sft_weight: float = 0.0,
             anchor_weight: float = 0.0, loser_weight: float = 1.0,
             pair_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The Region-Reg-DPO loss and its diagnostics (see the module doc for the terms).

    Inputs: per-pair MSEs of any equal shape (usually ``[B]``); the reference ones carry no
    gradient (they are detached here). ``pair_weights`` (same shape, finite, >= 0; ``None``: 1 each)
    scales each pair's DPO term (the mean is over pairs, not over the weights: a batch's DPO term is
    ``mean(w * term)``). Returns ``(loss, diagnostics)``: a float32 scalar with gradient and a dict of
    detached float32 scalars, keys and definitions in ``DIAGNOSTICS``.
    """
    if form not in LOSS_FORMS:
        raise ValueError(f"loss form must be one of {', '.join(LOSS_FORMS)}, got {form!r}")
    shapes = {tuple(t.shape) for t in (model_w, model_l, ref_w, ref_l)}
    if len(shapes) != 1:
        raise ValueError(f"model_w, model_l, ref_w, ref_l must have one shape, got {sorted(shapes)}")
    if not float(beta) > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    mw, ml = model_w.float(), model_l.float()
    rw, rl = ref_w.detach().float(), ref_l.detach().float()
    raw_gap_w, raw_gap_l = mw - rw, ml - rl
    if form == "diff":
        gap_w, gap_l = raw_gap_w, raw_gap_l
    else:
        gap_w = torch.log(mw.clamp_min(_EPS)) - torch.log(rw.clamp_min(_EPS))
        gap_l = torch.log(ml.clamp_min(_EPS)) - torch.log(rl.clamp_min(_EPS))
    if loser_clip is not None:
        gap_l = gap_l.clamp(max=float(loser_clip))
    inside = -0.5 * float(beta) * (gap_w - float(loser_weight) * gap_l)
    if pair_weights is None:
        dpo_term = -F.logsigmoid(inside).mean()
    else:
        w = torch.as_tensor(pair_weights, dtype=torch.float32, device=inside.device).detach()
        if tuple(w.shape) != tuple(inside.shape):
            raise ValueError(f"pair_weights {tuple(w.shape)} must have the MSEs' shape {tuple(inside.shape)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("pair_weights must be finite and >= 0")
        dpo_term = (w * -F.logsigmoid(inside)).mean()
    sft_term = mw.mean()
    anchor_term = F.relu(gap_w).mean()
    loss = dpo_term + float(sft_weight) * sft_term + float(anchor_weight) * anchor_term

    with torch.no_grad():
        inside_d = inside.detach()
        tie = (inside_d == 0) | ((raw_gap_w.detach().abs() <= TIE_RTOL * rw.abs())
                                 & (raw_gap_l.detach().abs() <= TIE_RTOL * rl.abs()))
        correct = (inside_d > 0) & ~tie
        acc = correct.float() + 0.5 * tie.float()
        acc_margin = (inside_d > ACC_MARGIN).float()
        dominant = correct & (raw_gap_l.detach().clamp_min(0) > (-raw_gap_w.detach()).clamp_min(0))
        n_correct = correct.sum()
        ratio = dominant.sum().float() / n_correct.clamp_min(1).float()
        diagnostics = {
            "loss": loss.detach(),
            "dpo_loss": dpo_term.detach(),
            "sft_loss": sft_term.detach(),
            "anchor_loss": anchor_term.detach(),
            "implicit_acc": acc.mean(),
            "implicit_acc_margin": acc_margin.mean(),
            "inside_term_mean": inside_d.mean(),
            "inside_term_min": inside_d.min(),
            "inside_term_max": inside_d.max(),
            "win_gap": raw_gap_w.detach().mean(),
            "lose_gap": raw_gap_l.detach().mean(),
            "mse_w": mw.detach().mean(),
            "mse_l": ml.detach().mean(),
            "ref_mse_w": rw.mean(),
            "ref_mse_l": rl.mean(),
            "loser_dominant_ratio": ratio,
        }
    return loss, diagnostics


def diagnostics_to_floats(diagnostics: dict[str, Any]) -> dict[str, float]:
    """Diagnostics as plain Python floats (one device sync), e.g. for a JSON line."""
    keys = list(diagnostics)
    values = torch.stack([torch.as_tensor(diagnostics[k], dtype=torch.float32).detach().cpu().reshape(())
                          for k in keys]).tolist()
    return dict(zip(keys, values))
