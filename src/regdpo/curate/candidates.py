"""Keep one of the several candidates the generator drew of a negative (pure: no I/O).

``regdpo generate --inpaint_candidates N`` writes N draws of ``inpaint`` per mask entry (streams
``inpaint``, ``inpaint_c1``, ...; ``regdpo.format.NegativeStream.candidate``). Before ``regdpo select``
chooses among types, each *group* (one video's candidates of one (type, strength)) is cut to one, by
``pick``:

- ``target`` (default): the valid candidate nearest the selection target inside the band
  (``band == "eligible"``), else the valid one nearest the target;
- ``worst``: the valid candidate with the lowest quality score inside the band, else the lowest of
  all (the model's worst draw: the hardest negative that is still in the band).

Ties go to the lower candidate index. A group whose candidates are all invalid (unmeasured, failed an
invariant) keeps them all: the selection skips them as it would anyway. Candidates are the dicts of
``curate.select`` with ``video``, ``stream``, ``neg_type``, ``strength``, ``quality_score``, ``band`` and
``valid``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from .. import format as fmt

PICKS = ("target", "worst")


def candidate_index(c: Mapping[str, Any]) -> int:
    return fmt.parse_negative(str(c["stream"])).candidate


def _group(c: Mapping[str, Any]) -> tuple[str, str, float]:
    parsed = fmt.parse_negative(str(c["stream"]))
    return str(c["video"]), parsed.type, parsed.strength


def pick_candidates(candidates: Iterable[Mapping[str, Any]], pick: str = "target",
                    target: float = 0.45) -> tuple[list[Mapping[str, Any]], list[dict[str, Any]]]:
    """``(kept, groups)``: the candidates with every multi-candidate group cut to its pick (order kept),
    and one record per such group: ``video``, ``neg_type``, ``strength``, ``streams`` and ``scores`` (by
    candidate index), ``kept`` (the stream), ``spread`` (max - min quality score of its valid candidates)."""
    if pick not in PICKS:
        raise ValueError(f"pick must be one of {', '.join(PICKS)}, got {pick!r}")
    items = list(candidates)
    groups: dict[tuple[str, str, float], list[Mapping[str, Any]]] = {}
    for c in items:
        groups.setdefault(_group(c), []).append(c)
    dropped: set[tuple[str, str]] = set()
    records = []
    for (video, neg_type, strength), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        members = sorted(members, key=candidate_index)
        valid = [c for c in members if c.get("valid", True) and c.get("quality_score") is not None]
        scores = [None if c.get("quality_score") is None else float(c["quality_score"]) for c in members]
        record: dict[str, Any] = {"video": video, "neg_type": neg_type, "strength": strength,
                                  "streams": [str(c["stream"]) for c in members], "scores": scores,
                                  "kept": None, "spread": None}
        if valid:
            chosen = choose(valid, pick, target)
            record["kept"] = str(chosen["stream"])
            valid_scores = [float(c["quality_score"]) for c in valid]
            record["spread"] = max(valid_scores) - min(valid_scores)
            dropped |= {(video, str(c["stream"])) for c in members if c is not chosen}
        records.append(record)
    kept = [c for c in items if (str(c["video"]), str(c["stream"])) not in dropped]
    return kept, records


def choose(valid: Sequence[Mapping[str, Any]], pick: str, target: float) -> Mapping[str, Any]:
    """The candidate ``pick`` keeps among ``valid`` ones (see the module doc)."""
    pool = [c for c in valid if c.get("band") == "eligible"] or list(valid)
    if pick == "worst":
        return min(pool, key=lambda c: (float(c["quality_score"]), candidate_index(c)))
    return min(pool, key=lambda c: (abs(float(c["quality_score"]) - target), candidate_index(c)))


def spread_summary(groups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Groups, candidates per group, and the mean / max spread of their quality scores."""
    spreads = [float(g["spread"]) for g in groups if g.get("spread") is not None]
    return {"groups": len(groups),
            "candidates": sum(len(g["streams"]) for g in groups),
            "mean_spread": sum(spreads) / len(spreads) if spreads else None,
            "max_spread": max(spreads) if spreads else None}
