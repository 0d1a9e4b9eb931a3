"""`curate.select` on crafted candidates: band, target, balance across types, secondary, fallback
with its reason, ref_margin filter and tie-break, purity, determinism."""

from __future__ import annotations

import random

from regdpo.curate.select import SelectSettings, select, summarise


def cand(clip, neg_type, q, *, band=None, video=None, stream=None, impure=(), valid=True, ref_margin=None, strength=1.0):
    if band is None:
        band = "too_bad" if q < 0.30 else "too_good" if q > 0.65 else "eligible"
    return {"video": video or clip, "source_clip": clip, "stream": stream or neg_type, "neg_type": neg_type,
            "strength": strength, "quality_score": q, "band": band, "impure": list(impure), "valid": valid,
            "ref_margin": ref_margin}


def picks(selection, role="primary"):
    return {p["source_clip"]: (p["video"], p["stream"]) for p in selection.picks if p["role"] == role}


def test_primary_is_eligible_and_closest_to_target():
    c = [cand("a", "blur", 0.62), cand("a", "blur", 0.47, stream="blur_s0.50", strength=0.5),
         cand("a", "blur", 0.20, stream="blur_s0.25", strength=0.25), cand("a", "blur", 0.9, stream="x")]
    sel = select(c)
    assert picks(sel) == {"a": ("a", "blur_s0.50")} and sel.picks[0]["reason"] is None
    assert picks(select(c, SelectSettings(target=0.6))) == {"a": ("a", "blur")}


def test_types_are_balanced_across_the_dataset():
    clips = [f"c{k}" for k in range(6)]
    c = [x for k in clips for x in (cand(k, "blur", 0.45), cand(k, "flicker", 0.40), cand(k, "hallucination", 0.2))]
    sel = select(c)
    types = [p["neg_type"] for p in sel.picks]
    assert types.count("blur") == 3 and types.count("flicker") == 3  # not 6 blur, though blur is closer
    s = summarise(sel, c)
    assert s["per_type"]["blur"]["primary"] == 3 and s["per_type"]["hallucination"]["primary"] == 0
    assert s["per_band"] == {"eligible": 6} and s["fallbacks"] == [] and s["source_clips"] == 6


def test_a_type_that_alone_is_eligible_is_taken_and_does_not_unbalance_the_rest():
    c = [cand("only-blur", "blur", 0.5), cand("only-blur", "flicker", 0.1)]
    for k in range(4):
        c += [cand(f"both{k}", "blur", 0.45), cand(f"both{k}", "flicker", 0.45)]
    sel = select(c)
    assert picks(sel)["only-blur"] == ("only-blur", "blur")
    types = [p["neg_type"] for p in sel.picks]
    assert abs(types.count("blur") - types.count("flicker")) <= 1


def test_fallback_takes_the_closest_and_says_why():
    c = [cand("a", "blur", 0.8), cand("a", "flicker", 0.1), cand("a", "hallucination", 0.26)]
    sel = select(c)
    assert picks(sel) == {"a": ("a", "hallucination")}
    reason = sel.picks[0]["reason"]
    assert reason.startswith("fallback: no candidate in the band") and "1 too_good" in reason and "2 too_bad" in reason
    assert summarise(sel, c)["fallbacks"][0]["stream"] == "hallucination"
    off = select(c, SelectSettings(fallback=False))
    assert off.picks == [] and "fallback off" in off.skipped[0]["reason"]


def test_invalid_candidates_are_never_selected():
    c = [cand("a", "blur", 0.45, valid=False), cand("a", "flicker", 0.2), cand("b", "blur", 0.45, valid=False)]
    sel = select(c)
    assert picks(sel) == {"a": ("a", "flicker")} and sel.picks[0]["reason"].startswith("fallback")
    assert sel.skipped == [{"source_clip": "b", "reason": sel.skipped[0]["reason"]}]
    assert "no valid candidate" in sel.skipped[0]["reason"]


def test_secondary_prefers_another_type_then_the_same_then_none():
    c = [cand("a", "blur", 0.45), cand("a", "blur", 0.40, stream="blur_s0.50"), cand("a", "flicker", 0.60),
         cand("b", "blur", 0.45), cand("b", "blur", 0.50, video="b__m1"),
         cand("c", "blur", 0.45)]
    sel = select(c, SelectSettings(secondary=True))
    prim, sec = picks(sel), picks(sel, "secondary")
    assert {sec["a"][1], prim["a"][1]} == {"blur", "flicker"}  # another type for the second
    assert set([prim["b"], sec["b"]]) == {("b", "blur"), ("b__m1", "blur")}
    assert [p["reason"] for p in sel.picks if p["source_clip"] == "b" and p["role"] == "secondary"] == [
        "same type as the primary: no other type is eligible"]
    assert "c" not in sec and sel.notes == [{"source_clip": "c", "note": "no secondary: only one eligible candidate"}]
    assert summarise(sel, c)["selected"] == 5


def test_ref_margin_filters_and_breaks_ties():
    c = [cand("a", "blur", 0.45, ref_margin=5.0), cand("a", "blur", 0.45, video="a__m1", ref_margin=0.5),
         cand("a", "blur", 0.45, video="a__m2", ref_margin=2.0)]
    assert picks(select(c)) == {"a": ("a__m1", "blur")}  # equal scores: the harder one for the reference
    c = [cand("a", "blur", 0.45, ref_margin=5.0), cand("a", "flicker", 0.60, ref_margin=0.1),
         cand("b", "blur", 0.45, ref_margin=9.0), cand("b", "flicker", 0.1)]
    sel = select(c, SelectSettings(max_ref_margin=1.0))
    assert picks(sel)["a"] == ("a", "flicker")
    reason = [p["reason"] for p in sel.picks if p["source_clip"] == "b"][0]
    assert "--max_ref_margin 1" in reason
    # a candidate without a margin is kept
    assert picks(select([cand("a", "blur", 0.5)], SelectSettings(max_ref_margin=0.0))) == {"a": ("a", "blur")}


def test_pure_before_impure_and_pure_only():
    c = [cand("a", "blur", 0.45, impure=["flicker"]), cand("a", "blur", 0.55, video="a__m1")]
    assert picks(select(c)) == {"a": ("a__m1", "blur")}
    c = [cand("a", "blur", 0.45, impure=["flicker"])]
    assert picks(select(c))["a"] == ("a", "blur")
    sel = select(c, SelectSettings(pure_only=True))
    assert "impure" in sel.picks[0]["reason"]  # fallback says why


def test_selection_does_not_depend_on_input_order():
    gen = random.Random(0)
    c = [cand(f"c{k % 7}", t, round(gen.random(), 3), video=f"c{k % 7}__m{k // 7}")
         for k in range(28) for t in ("blur", "flicker", "hallucination")]
    want = select(c, SelectSettings(secondary=True)).picks
    for _ in range(3):
        gen.shuffle(c)
        assert select(c, SelectSettings(secondary=True)).picks == want
