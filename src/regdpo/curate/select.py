"""Pick the negatives to train on from scored candidates (pure: no I/O).

A *candidate* is one audited negative stream: a dict with ``video``, ``source_clip``, ``stream``,
``neg_type``, ``strength``, ``quality_score``, ``band``, ``impure`` (list), ``valid`` (False for
invariant failures or unmeasured items: never selected) and optionally ``ref_margin`` (the
reference model's own preference margin from ``regdpo score``; larger = easier for it).

Per source clip (all its mask entries and strengths together):

1. *eligible* candidates: ``band == "eligible"`` and, with ``max_ref_margin``, a ``ref_margin`` not
   above it (a candidate without a margin is kept).
2. primary: among the eligible ones, the type picked least often so far across the dataset
   (balance), then pure before impure, then closest to ``target``, then smallest ``ref_margin``
   (harder for the reference model), then by name. Clips with the fewest eligible types are
   decided first, so a type that alone is eligible somewhere does not crowd out balance elsewhere.
3. with ``secondary``: a second eligible candidate of the same clip, another type where possible.
4. no eligible candidate: the valid candidate closest to ``target`` (unless ``fallback`` is off),
   with the reason recorded; no valid candidate: the clip is skipped, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

DEFAULT_TARGET = 0.45


@dataclass(frozen=True)
class SelectSettings:
    target: float = DEFAULT_TARGET
    secondary: bool = False
    max_ref_margin: float | None = None
    fallback: bool = True
    pure_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "secondary": self.secondary, "max_ref_margin": self.max_ref_margin,
                "fallback": self.fallback, "pure_only": self.pure_only}


@dataclass
class Selection:
    """``picks``: the chosen candidates (copies, with ``role`` and ``reason``); ``skipped``:
    ``{source_clip, reason}`` of clips without any pick; ``notes``: per clip, why no secondary."""

    picks: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)


def _distance(c: Mapping[str, Any], target: float) -> float:
    return abs(float(c["quality_score"]) - target)


def _margin(c: Mapping[str, Any]) -> float:
    m = c.get("ref_margin")
    return float("inf") if m is None else float(m)


def _name(c: Mapping[str, Any]) -> tuple[str, str]:
    return (str(c["video"]), str(c["stream"]))


def _eligible(c: Mapping[str, Any], s: SelectSettings) -> bool:
    if c.get("band") != "eligible":
        return False
    if s.pure_only and c.get("impure"):
        return False
    m = c.get("ref_margin")
    return s.max_ref_margin is None or m is None or float(m) <= s.max_ref_margin


def _describe_miss(valid: Sequence[Mapping[str, Any]], s: SelectSettings) -> str:
    in_band = [c for c in valid if c.get("band") == "eligible"]
    bands = {}
    for c in valid:
        bands[c.get("band")] = bands.get(c.get("band"), 0) + 1
    shown = ", ".join(f"{n} {b}" for b, n in sorted(bands.items(), key=lambda kv: str(kv[0])))
    if in_band and s.pure_only and all(c.get("impure") for c in in_band):
        return f"no eligible candidate: the {len(in_band)} in the band are impure (--pure_only); {shown}"
    if in_band:
        return (f"no eligible candidate: the {len(in_band)} in the band have ref_margin above "
                f"--max_ref_margin {s.max_ref_margin:g}; {shown}")
    return f"no candidate in the band: {shown}"


def select(candidates: Iterable[Mapping[str, Any]], settings: SelectSettings = SelectSettings()) -> Selection:
    """Choose per source clip (deterministic for any input order); see the module docstring."""
    s = settings
    clips: dict[str, list[Mapping[str, Any]]] = {}
    for c in candidates:
        clips.setdefault(str(c["source_clip"]), []).append(c)
    out = Selection()
    counts: dict[str, int] = {}

    def rank(c: Mapping[str, Any]) -> tuple:
        return (counts.get(c["neg_type"], 0), bool(c.get("impure")), _distance(c, s.target), _margin(c), _name(c))

    def pick(c: Mapping[str, Any], role: str, reason: str | None) -> None:
        counts[c["neg_type"]] = counts.get(c["neg_type"], 0) + 1
        out.picks.append({**c, "role": role, "reason": reason})

    def constraint(clip: str) -> tuple[int, str]:
        types = {c["neg_type"] for c in clips[clip] if c.get("valid", True) and _eligible(c, s)}
        return (len(types) if types else 10**6, clip)  # clips needing a fallback last

    for clip in sorted(clips, key=constraint):
        valid = [c for c in clips[clip] if c.get("valid", True) and c.get("quality_score") is not None]
        if not valid:
            out.skipped.append({"source_clip": clip, "reason": "no valid candidate (every negative failed an "
                                "invariant or could not be measured)"})
            continue
        eligible = [c for c in valid if _eligible(c, s)]
        if not eligible:
            reason = _describe_miss(valid, s)
            if not s.fallback:
                out.skipped.append({"source_clip": clip, "reason": reason + " (fallback off)"})
                continue
            best = min(valid, key=lambda c: (_distance(c, s.target), bool(c.get("impure")), _margin(c), _name(c)))
            pick(best, "primary", f"fallback: {reason}; took the closest to the target")
            if s.secondary:
                out.notes.append({"source_clip": clip, "note": "no secondary: no eligible candidate"})
            continue
        primary = min(eligible, key=rank)
        pick(primary, "primary", None)
        if not s.secondary:
            continue
        rest = [c for c in eligible if _name(c) != _name(primary)]
        if not rest:
            out.notes.append({"source_clip": clip, "note": "no secondary: only one eligible candidate"})
            continue
        second = min(rest, key=lambda c: (c["neg_type"] == primary["neg_type"], *rank(c)))
        pick(second, "secondary", None if second["neg_type"] != primary["neg_type"]
             else "same type as the primary: no other type is eligible")
    out.picks.sort(key=lambda p: (str(p["source_clip"]), p["role"] != "primary", _name(p)))
    return out


def summarise(selection: Selection, candidates: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts per type (primary / secondary / candidates), per band, fallbacks, skipped clips."""
    types = sorted({str(c["neg_type"]) for c in candidates})
    per_type = {t: {"candidates": sum(c["neg_type"] == t for c in candidates),
                    "eligible": sum(c["neg_type"] == t and c.get("band") == "eligible" for c in candidates),
                    "primary": sum(p["neg_type"] == t and p["role"] == "primary" for p in selection.picks),
                    "secondary": sum(p["neg_type"] == t and p["role"] == "secondary" for p in selection.picks)}
                for t in types}
    per_band: dict[str, int] = {}
    for p in selection.picks:
        per_band[str(p.get("band"))] = per_band.get(str(p.get("band")), 0) + 1
    fallbacks = [{"source_clip": p["source_clip"], "video": p["video"], "stream": p["stream"],
                  "quality_score": p["quality_score"], "band": p["band"], "reason": p["reason"]}
                 for p in selection.picks if (p.get("reason") or "").startswith("fallback")]
    return {
        "source_clips": len({str(c["source_clip"]) for c in candidates}),
        "candidates": len(candidates),
        "selected": len(selection.picks),
        "per_type": per_type,
        "per_band": dict(sorted(per_band.items())),
        "fallbacks": fallbacks,
        "skipped": list(selection.skipped),
        "notes": list(selection.notes),
    }
