"""`regdpo select` and `regdpo prune` on an audited dataset written with the real writer: the
selected manifest trains in DPODataset, prune deletes only unselected candidates, never a
selected entry's GT, leaves links and foreign folders alone, and keeps manifest and metas consistent."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from regdpo import format as fmt
from regdpo.audit import synthetic as S
from regdpo.cli import main
from helpers import DATA, FakeTokenizer, tree_files

T, H, W = 8, 64, 96


def _segment_shift(gt, shifts):
    segments = S.plan_segments(gt.shape[0], len(shifts))
    out = gt.astype(np.int16)
    for (start, stop), shift in zip(segments, shifts):
        out[start:stop] += shift
    return np.clip(out, 0, 255).astype(np.uint8), segments


def _clips():
    with_davis = (DATA / "DAVIS").is_dir()
    # without the fixtures, more procedural clips: enough candidates for the selection to balance types
    clips = {f"tex{k}": S.textured_clip(T, H, W, seed=k, speed=0.5 + k / 2) for k in range(3 if with_davis else 6)}
    if with_davis:
        clips.update(S.davis_clips(DATA, T, H, W))
    return clips


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """Format v2 candidates: per source clip two mask entries (``{clip}``, ``{clip}__m1``), each with
    every type at strength 1.0 and 0.5: blur (sigma 2.5 / 1.0), hallucination (content shifted by
    6 / 2 px), flicker (brightness jumps of 20 / 10 grey levels between segments)."""
    root = tmp_path_factory.mktemp("select") / "dpo_data"
    for k, (name, gt) in enumerate(sorted(_clips().items())):
        for m in range(2):
            hole = S.moving_ellipse_hole(T, H, W, seed=10 * k + m)
            strong, segments = _segment_shift(gt, (20, -20, 20))
            mild, _ = _segment_shift(gt, (10, -10, 10))
            negs = {"blur": S.blur_negative(gt, 2.5), "blur_s0.50": S.blur_negative(gt, 1.0),
                    "hallucination": np.roll(gt, 6, axis=2), "hallucination_s0.50": np.roll(gt, 2, axis=2),
                    "flicker": strong, "flicker_s0.50": mild}
            video = name if m == 0 else f"{name}__m{m}"
            S.write_synthetic_video(root, video, gt, hole, negs, segments=segments, source_clip=name, mask_index=m)
    from regdpo.writer import rebuild_manifest

    rebuild_manifest(root)
    assert main(["audit", str(root), "--no-progress", "--no-html"]) == 0
    return root


def test_audit_items_are_keyed_by_stream(audited):
    doc = json.loads((audited / "audit.json").read_text())
    keys = {(i["video"], i["stream"]) for i in doc["items"]}
    assert len(keys) == len(doc["items"]) == 6 * len(fmt.load_manifest(audited).videos)
    for item in doc["items"]:
        assert fmt.stream_name(item["neg_type"], item["strength"]) == item["stream"]
    from regdpo.audit.calibration import band_table

    rows = [(r["neg_type"], r["strength"], r["count"]) for r in band_table(doc["items"])]
    n = len(fmt.load_manifest(audited).videos)
    assert rows == [(t, s, n) for t in ("hallucination", "blur", "flicker") for s in (0.5, 1.0)]
    by = {(i["video"], i["stream"]): i["quality_score"] for i in doc["items"]}
    for video, stream in keys:  # the milder variant of each defect scores higher
        if stream.endswith("_s0.50"):
            assert by[(video, stream)] > by[(video, stream[:-6])], (video, stream)


def test_select_writes_a_balanced_manifest_and_summary(audited, capsys):
    root = audited
    doc = json.loads((root / "audit.json").read_text())
    assert main(["select", str(root), "--secondary"]) == 0
    text = capsys.readouterr().out
    assert "selected" in text and "per band" in text
    record = json.loads((root / "selection.json").read_text())
    selected = fmt.load_manifest(root, root / "manifest.selected.json")
    picks = record["picks"]
    by_video = {}
    for p in picks:
        by_video.setdefault(p["video"], set()).add(p["stream"])
    assert {v.name: set(v.stream_names) for v in selected.videos} == by_video
    assert record["considered"] == sorted(v.name for v in fmt.load_manifest(root).videos)
    eligible = {(i["video"], i["stream"]) for i in doc["items"] if i["band"] == "eligible"}
    for p in picks:
        assert ((p["video"], p["stream"]) in eligible) == (p["reason"] is None or p["role"] == "secondary")
    s = record["summary"]
    assert s["selected"] == len(picks) and sum(s["per_band"].values()) == len(picks)
    primaries = [p for p in picks if p["role"] == "primary"]
    clips = {v.source_clip for v in fmt.load_manifest(root).videos}
    assert sorted(p["source_clip"] for p in primaries) == sorted(clips)  # one per source clip, not per mask
    assert len({p["neg_type"] for p in primaries}) >= 2  # more than one type chosen
    assert {v.source_clip for v in selected.videos} <= clips
    for v in selected.videos:
        assert all(n["stream"] in by_video[v.name] for n in v.negatives)


def test_selected_manifest_trains_in_dpodataset(audited):
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from regdpo.dataset import DPODataset, collate_fn

    root = audited
    assert main(["select", str(root), "--output", str(root / "sel.json"), "--summary", str(root / "rec.json")]) == 0
    record = json.loads((root / "rec.json").read_text())
    args = SimpleNamespace(dpo_data_root=str(root), nframes=T, resolution=64, manifest=str(root / "sel.json"))
    ds = DPODataset(args, FakeTokenizer())
    assert sorted((p.video, p.stream, p.neg_strength) for p in ds.pairs) == sorted(
        (p["video"], p["stream"], p["strength"]) for p in record["picks"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_fn)
    # Region-Reg-DPO steps of a toy pixel-space denoiser (policy from a frozen copy) on the selection
    from regdpo.dpo import dpo_loss, region_mse, region_weights

    torch.manual_seed(0)
    policy = torch.nn.Conv3d(3, 3, 3, padding=1)
    reference = torch.nn.Conv3d(3, 3, 3, padding=1).requires_grad_(False)
    reference.load_state_dict(policy.state_dict())
    opt = torch.optim.SGD(policy.parameters(), lr=1e-2)
    start = [p.detach().clone() for p in policy.parameters()]
    losses = []
    for batch in loader:
        assert set(batch["neg_type"]) <= {p["neg_type"] for p in record["picks"]}
        weights = region_weights(batch["mask_hole"], batch["mask_boundary"], batch["mask_context"])
        noise = torch.randn_like(batch["pixel_values_pos"])  # shared by winner and loser

        def mse(net, clip):
            noisy = (clip + noise).transpose(1, 2)  # [B, C, F, H, W]
            return region_mse(net(noisy).transpose(1, 2), noise, weights)

        loss, diag = dpo_loss(mse(policy, batch["pixel_values_pos"]), mse(policy, batch["pixel_values_neg"]),
                              mse(reference, batch["pixel_values_pos"]), mse(reference, batch["pixel_values_neg"]),
                              beta=50.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert len(losses) == -(-len(ds) // 2) and all(np.isfinite(losses))
    assert losses[0] == pytest.approx(np.log(2), abs=1e-4)  # policy == reference at the first step
    assert any(not torch.equal(a, b) for a, b in zip(start, policy.parameters()))


def test_select_accepts_score_json_margins(audited, tmp_path, capsys):
    root = audited
    doc = json.loads((root / "audit.json").read_text())
    score = {"version": 1, "settings": {}, "items": [
        {"video": i["video"], "stream": i["stream"], "neg_type": i["neg_type"], "strength": i["strength"],
         "ref_margin": 10.0 if i["neg_type"] == "blur" else 0.1} for i in doc["items"]]}
    (tmp_path / "score.json").write_text(json.dumps(score))
    out = ["--output", str(tmp_path / "m.json"), "--summary", str(tmp_path / "r.json")]
    assert main(["select", str(root), "--score", str(tmp_path / "score.json"), "--max_ref_margin", "1"] + out) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["score"] == str(tmp_path / "score.json") and record["settings"]["max_ref_margin"] == 1.0
    assert all(p["neg_type"] != "blur" or p["reason"] for p in record["picks"])  # blur only as a fallback
    assert all(p["ref_margin"] is not None for p in record["picks"])
    (tmp_path / "bad.json").write_text(json.dumps({"items": [{"video": "x", "stream": "blur", "ref_margin": "hi"}]}))
    assert main(["select", str(root), "--score", str(tmp_path / "bad.json")] + out) == 1  # its content: data
    assert "ref_margin" in capsys.readouterr().err


def test_select_bad_input(audited, tmp_path, capsys):
    assert main(["select", str(tmp_path)]) == 2
    assert "regdpo audit" in capsys.readouterr().err
    assert main(["select", str(audited), "--target", "1.5"]) == 2
    assert "--target" in capsys.readouterr().err
    assert main(["select", str(audited), "--score", str(tmp_path / "none.json")]) == 2
    assert "--score" in capsys.readouterr().err


def _sizes(folder):
    return {f: os.path.getsize(folder / f) for f in tree_files(folder)}


def test_prune_deletes_only_unselected_candidates(audited, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(audited, root)
    assert main(["select", str(root)]) == 0
    record = json.loads((root / "selection.json").read_text())
    picked = {}
    for p in record["picks"]:
        picked.setdefault(p["video"], set()).add(p["stream"])
    # a video the selection never considered, a linked video, a video holding a foreign file
    names = sorted(v.name for v in fmt.load_manifest(root).videos)
    outside = tmp_path / "outside"
    shutil.copytree(root / names[0], outside)
    os.symlink(outside, root / "linked")
    (root / names[1] / "notes.txt").write_text("mine")
    record["considered"] += ["linked", "../outside", "-odd name"]
    (root / "selection.json").write_text(json.dumps(record))
    before = {n: _sizes(root / n) for n in names}
    outside_before = _sizes(outside)
    capsys.readouterr()

    assert main(["prune", str(root), "--dry-run"]) == 1  # 1: some videos were skipped
    text = capsys.readouterr().out
    assert "dry run" in text and "would delete" in text and "SKIP linked" in text and f"SKIP {names[1]}" in text
    assert "SKIP ../outside: invalid video name" in text and "SKIP -odd name" in text
    assert {n: _sizes(root / n) for n in names} == before and not (root / "prune.json").exists()

    assert main(["prune", str(root)]) == 1
    report = json.loads((root / "prune.json").read_text())
    for n in names:
        if n == names[1]:
            assert _sizes(root / n) == before[n]  # foreign file: left alone
            continue
        if n not in picked:  # a mask entry left without a selected negative: removed whole
            assert not (root / n).exists()
            continue
        meta = fmt.read_video_meta(root, n)
        assert sorted(s.stream for s in meta.streams) == sorted(picked[n])
        after = _sizes(root / n)
        for f, size in before[n].items():  # kept files untouched, deleted ones are unselected negatives
            stream = f.split("/")[0]
            if stream in (fmt.GT_DIR, fmt.MASK_DIR) or stream in picked[n]:
                assert after[f] == size
            elif f not in (fmt.META_FILE, fmt.CHECKSUMS_FILE):
                assert f not in after
        checksummed = {line.split("  ")[1].split("/")[0]
                       for line in (root / n / fmt.CHECKSUMS_FILE).read_text().splitlines()}
        assert checksummed == {fmt.GT_DIR, fmt.MASK_DIR, *picked[n]}  # the deleted streams' lines dropped
        from regdpo.verify import verify_video

        assert verify_video(root, n).problems == []  # the pruned entry still verifies, checksums included
    assert _sizes(outside) == outside_before and (root / "linked").is_symlink()
    plans = {v["video"]: v for v in report["videos"]}
    assert plans[names[0]]["bytes_after"] < plans[names[0]]["bytes_before"]
    assert report["summary"]["bytes_after"] < report["summary"]["bytes_before"]
    manifest = fmt.load_manifest(root)  # rebuilt: agrees with the metas
    left = [n for n in names if (root / n).exists()]
    assert set(picked) | {names[1]} == set(left)
    assert {v.name: v.stream_names for v in manifest.videos} == {
        n: [s.stream for s in fmt.read_video_meta(root, n).streams] for n in left}
    assert report["summary"]["removed"] == len(names) - len(left) > 0
    assert not (root / fmt.STAGING_DIR).exists()
    # the pruned dataset audits clean through the selected manifest
    assert main(["audit", str(root), "--manifest", str(root / "manifest.selected.json"), "--no-progress",
                 "--no-html", "--output-dir", str(tmp_path / "a2")]) == 0


def test_prune_removes_entries_left_without_a_selected_negative(audited, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(audited, root)
    assert main(["select", str(root)]) == 0
    record = json.loads((root / "selection.json").read_text())
    dropped = record["picks"][0]["video"]
    record["picks"] = [p for p in record["picks"] if p["video"] != dropped]
    (root / "selection.json").write_text(json.dumps(record))
    assert main(["prune", str(root)]) == 0
    assert not (root / dropped).exists()
    assert dropped not in {v.name for v in fmt.load_manifest(root).videos}
    bad = dict(record, picks=[{"video": "not-considered", "stream": "blur"}])
    (root / "selection.json").write_text(json.dumps(bad))
    assert main(["prune", str(root)]) == 1  # a malformed selection.json is a data error
    assert "not among 'considered'" in capsys.readouterr().err


def test_rerunning_prune_finishes_an_interrupted_one_and_changes_nothing_after(audited, tmp_path, monkeypatch):
    """Fault campaign: a prune killed after rewriting a meta.json but before deleting that video's streams left
    a folder it no longer owned (every rerun skipped it, exit 1), and a rerun after a complete prune exited 1
    ('missing') for every entry it had removed."""
    from regdpo.curate import prune

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    shutil.copytree(audited, whole)
    assert main(["select", str(whole)]) == 0
    shutil.copytree(whole, cut)
    assert main(["prune", str(whole)]) == 0
    expected = {f: (whole / f).read_bytes() for f in tree_files(whole) if f != "prune.json"}

    real_discard = prune._discard

    def interrupted(path, trash_dir):  # the kill lands between a meta.json rewrite and the first deletion
        raise KeyboardInterrupt

    monkeypatch.setattr(prune, "_discard", interrupted)
    assert main(["prune", str(cut)]) == 130
    monkeypatch.setattr(prune, "_discard", real_discard)
    leftover = cut / fmt.STAGING_DIR / "_trash-0123abcd" / "c1768231" / "flicker"  # a prune killed in its rmtree
    leftover.mkdir(parents=True)
    (leftover / "00000.png").write_bytes(b"deleted frame")
    assert main(["prune", str(cut)]) == 0
    assert main(["prune", str(cut)]) == 0  # and once more: nothing left to do is no failure
    got = {f: (cut / f).read_bytes() for f in tree_files(cut) if f != "prune.json" and not f.startswith(".lock")}
    expected = {f: b for f, b in expected.items() if not f.startswith(".lock")}
    got = {f: b.replace(str(cut).encode(), str(whole).encode()) for f, b in got.items()}
    assert got == expected
    report = json.loads((cut / "prune.json").read_text())["summary"]
    assert report["skipped"] == 0 and report["already_removed"] > 0
