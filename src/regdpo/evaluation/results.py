"""``eval.json``: the results of a ``regdpo eval`` run (schema in docs/evaluation.md).

Built from the runner's per-(model, clip) results only, so it is the same whether the run was resumed or
not, and byte-identical for the same inputs and seed (no timings, no dates).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .evalset import EvalClip, EvalSet
from .metrics import MetricSpec, NotMeasured
from .models import EvalModel
from .runner import UnitResult
from .stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, MIN_CLIPS, compare

EVAL_JSON = "eval.json"
EVAL_HTML = "eval.html"
EVAL_VERSION = 1


def build_document(evalset: EvalSet, split: str | None, clips: Sequence[EvalClip], models: Sequence[EvalModel],
                   results: dict[tuple[str, str], UnitResult], specs: Sequence[MetricSpec],
                   set_metrics: Sequence[Any] = (), *, backend: str, seed: int) -> dict[str, Any]:
    names = [m.name for m in models]
    clip_specs = [s for s in specs if s.level == "clip"]
    clip_rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for clip in clips:
        row: dict[str, Any] = {"name": clip.name, "split": clip.split,
                               "source": {"dataset": clip.source.get("dataset"), "id": clip.source.get("id")}}
        reasons: dict[str, dict[str, str]] = {}
        for model in names:
            r = results.get((model, clip.name))
            if r is None or r.error is not None:
                why = r.error if r is not None else "not run"
                row[model] = {s.name: None for s in clip_specs}
                reasons[model] = {s.name: f"failed: {why}" for s in clip_specs}
                failed.append({"model": model, "clip": clip.name, "error": why})
                continue
            row[model] = {s.name: r.values.get(s.name) for s in clip_specs}
            missing = {s.name: r.not_measured.get(s.name, "not reported by its metric") for s in clip_specs
                       if row[model][s.name] is None}
            if missing:
                reasons[model] = missing
        if reasons:
            row["not_measured"] = reasons
        clip_rows.append(row)

    summary: dict[str, dict[str, Any]] = {}
    for model in names:
        per: dict[str, Any] = {}
        for s in clip_specs:
            vals = [row[model][s.name] for row in clip_rows if row[model][s.name] is not None]
            per[s.name] = {"mean": float(np.mean(vals)) if vals else None, "n": len(vals)}
        summary[model] = per
    set_values = _set_values(models, clips, results, set_metrics)
    for model in names:
        for metric, value in set_values.get(model, {}).items():
            summary[model][metric] = value

    comparisons = []
    clip_names = [row["name"] for row in clip_rows]
    for model in names[1:]:
        stats = {}
        for s in clip_specs:
            base = [row[names[0]][s.name] for row in clip_rows]
            other = [row[model][s.name] for row in clip_rows]
            stats[s.name] = compare(s, base, other, clip_names)
        for s in specs:
            if s.level == "set":
                a, b = summary[names[0]].get(s.name, {}), summary[model].get(s.name, {})
                va, vb = a.get("value"), b.get("value")
                stats[s.name] = {"n": len(clips), "delta": None if va is None or vb is None else vb - va,
                                 "verdict": "not tested",
                                 "note": "a set-level metric: one value per model, no per-clip pairs"}
        comparisons.append({"model": model, "baseline": names[0], "metrics": stats})

    return {
        "eval_version": EVAL_VERSION,
        "evalset": {"path": str(evalset.root), "evalset_sha256": evalset.sha256, "protocol": evalset.protocol},
        "split": split,
        "backend": backend,
        "seed": seed,
        "models": [{"name": m.name, "spec": m.spec, "settings": m.settings} for m in models],
        "metrics": [s.to_dict() for s in specs],
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "interval": 0.95,
                      "min_clips": MIN_CLIPS},
        "clips": clip_rows,
        "summary": summary,
        "comparisons": comparisons,
        "failed": failed,
    }


def _set_values(models: Sequence[EvalModel], clips: Sequence[EvalClip], results: dict[tuple[str, str], UnitResult],
                set_metrics: Sequence[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for model in models:
        for provider in set_metrics:
            key = type(provider).__name__
            feats, reason = [], None
            for clip in clips:
                r = results.get((model.name, clip.name))
                f = None if r is None or r.error else r.features.get(key)
                if f is None or (isinstance(f, dict) and "not_measured" in f):
                    reason = (f or {}).get("not_measured") if isinstance(f, dict) else f"clip {clip.name} failed"
                    break
                feats.append(f)
            values = ({s.name: NotMeasured(reason or "no clip") for s in provider.specs} if reason or not feats
                      else provider.combine(feats))
            for name, value in values.items():
                out.setdefault(model.name, {})[name] = (
                    {"value": None, "not_measured": value.reason} if isinstance(value, NotMeasured)
                    else {"value": float(value), "n": len(feats)})
    return out
