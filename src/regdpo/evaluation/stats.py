"""Paired comparison of two models over the same clips. Pure numpy, deterministic.

For a metric and a model B compared with the baseline A, over the clips where both were measured:

- ``delta[i] = B[i] - A[i]`` (in the metric's unit; its sign is not flipped for lower-is-better metrics);
- win / tie / loss per clip: a tie when ``|delta| <= spec.tie`` (the metric's tie tolerance), else a win when
  the delta goes the metric's better way;
- the paired bootstrap: ``BOOTSTRAP_RESAMPLES`` resamples of the clips with replacement (numpy's
  ``default_rng(BOOTSTRAP_SEED)``), the mean delta of each; the 95 % interval is the 2.5 and 97.5 percentiles
  of those means and ``p_delta_gt_0`` the share of them above 0 (``p_better``: the share on the better side);
- the verdict: ``better`` when the interval lies wholly on the better side of 0 and the mean delta is larger
  than the tie tolerance, ``worse`` for the mirror case, else ``no significant difference``; with fewer than
  ``MIN_CLIPS`` measured clips always ``no significant difference``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .metrics import MetricSpec

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
MIN_CLIPS = 2
VERDICTS = ("better", "worse", "no significant difference")


def bootstrap_means(deltas: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Means of ``resamples`` paired bootstrap resamples of ``deltas`` (float64 ``[resamples]``)."""
    rng = np.random.default_rng(seed)
    n = len(deltas)
    out = np.empty(resamples, np.float64)
    step = max(1, 2_000_000 // max(n, 1))  # bounded memory for long lists
    for start in range(0, resamples, step):
        k = min(step, resamples - start)
        out[start:start + k] = deltas[rng.integers(0, n, (k, n))].mean(axis=1)
    return out


def compare(spec: MetricSpec, baseline: Sequence[float | None], model: Sequence[float | None], clips: Sequence[str],
            resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """The paired statistics of ``model`` against ``baseline`` for one metric (see the module doc)."""
    pairs = [(c, float(b), float(m)) for c, b, m in zip(clips, baseline, model) if b is not None and m is not None]
    out: dict[str, Any] = {"n": len(pairs), "deltas": {c: m - b for c, b, m in pairs}}
    if not pairs:
        return {**out, "mean_delta": None, "ci95": None, "p_delta_gt_0": None, "p_better": None, "wins": 0,
                "ties": 0, "losses": 0, "verdict": "no significant difference",
                "note": "no clip where both models were measured"}
    deltas = np.array([m - b for _, b, m in pairs], np.float64)
    sign = 1.0 if spec.higher_is_better else -1.0
    better = sign * deltas
    wins = int(np.sum(better > spec.tie))
    losses = int(np.sum(better < -spec.tie))
    means = bootstrap_means(deltas, resamples, seed)
    lo, hi = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    mean = float(deltas.mean())
    p_gt0 = float(np.mean(means > 0))
    p_better = float(np.mean(sign * means > 0))
    verdict, note = "no significant difference", ""
    if len(pairs) < MIN_CLIPS:
        note = f"fewer than {MIN_CLIPS} clips"
    else:
        better_lo, better_hi = (lo, hi) if sign > 0 else (-hi, -lo)  # the interval of the improvement
        if abs(mean) > spec.tie and better_lo > 0:
            verdict = "better"
        elif abs(mean) > spec.tie and better_hi < 0:
            verdict = "worse"
    return {**out, "mean_delta": mean, "ci95": [lo, hi], "p_delta_gt_0": p_gt0, "p_better": p_better,
            "wins": wins, "ties": len(pairs) - wins - losses, "losses": losses, "verdict": verdict,
            **({"note": note} if note else {})}
