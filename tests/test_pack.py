"""regdpo pack / verify / unpack: round trip pixel-exact, determinism, selection, resume, damaged shards."""

import io
import json
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from regdpo import format as fmt
from regdpo import pack as pack_mod
from regdpo import packed_format as pf
from regdpo.cli import main as regdpo_main
from regdpo.frames import read_mask_clip, read_rgb_clip

from helpers import tree_files


def make_videos(root: Path, count: int = 3, frames: int = 12) -> Path:
    from regdpo.audit import synthetic

    for k in range(count):
        folder = root / f"clip{k}"
        folder.mkdir(parents=True)
        for t, frame in enumerate(synthetic.textured_clip(frames, 72, 96, seed=k)):
            cv2.imwrite(str(folder / f"{t:03d}.png"), frame[:, :, ::-1])
    return root


def generate_small(out: Path, videos: Path, masks_per_clip: int = 2) -> Path:
    """A classical-backend dataset: 3 clips x ``masks_per_clip`` entries x (blur, hallucination), 6 x 64 x 85."""
    assert regdpo_main(["generate", "--video_root", str(videos), "--output_dir", str(out), "--nframes", "6",
                        "--resolution", "64", "--seed", "1", "--neg_types", "blur", "hallucination",
                        "--masks_per_clip", str(masks_per_clip), "--no_progress"]) == 0
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("packdata")
    return generate_small(base / "dpo_data", make_videos(base / "videos"))


def pack(root, out, *extra):
    return regdpo_main(["pack", str(root), str(out), "--no_progress", *map(str, extra)])


def streams_of(root: Path, name: str) -> dict[str, np.ndarray]:
    meta = fmt.read_video_meta(root, name)
    names = fmt.frame_names(meta.num_frames)
    out = {"masks": read_mask_clip([root / name / fmt.MASK_DIR / n for n in names]),
           "gt": read_rgb_clip([root / name / fmt.GT_DIR / n for n in names])}
    for s in meta.streams:
        out[s.stream] = read_rgb_clip([root / name / s.stream / n for n in names])
    return out


def meta_without_timings(root: Path, name: str) -> dict:
    meta = json.loads((root / name / fmt.META_FILE).read_text())
    meta.pop("timings")
    return meta


def test_pack_verify_unpack_round_trips_pixel_exact(dataset, tmp_path, capsys):
    out, back = tmp_path / "packed", tmp_path / "back"
    assert pack(dataset, out, "--shard_size", "60KB") == 0
    index = json.loads((out / pf.INDEX_FILE).read_text())
    assert (index["num_samples"], index["num_videos"], index["num_pairs"]) == (3, 6, 12)  # one sample per source clip
    assert index["num_shards"] >= 2 and not (out / pf.PACK_WORK_DIR).exists()
    assert sorted(p.name for p in out.iterdir()) == [pf.INDEX_FILE] + [pf.shard_name(i) for i in range(index["num_shards"])]
    for shard in index["shards"]:
        data = (out / shard["name"]).read_bytes()
        import hashlib

        assert (len(data), hashlib.sha256(data).hexdigest()) == (shard["bytes"], shard["sha256"])
    assert regdpo_main(["verify", str(out)]) == 0
    assert "1 with problems" not in capsys.readouterr().out
    assert regdpo_main(["unpack", str(out), str(back), "--no_progress"]) == 0
    assert regdpo_main(["verify", str(back)]) == 0
    names = fmt.complete_videos(dataset)
    assert fmt.complete_videos(back) == names
    for name in names:
        original, restored = streams_of(dataset, name), streams_of(back, name)
        assert original.keys() == restored.keys()
        for stream in original:
            assert np.array_equal(original[stream], restored[stream]), (name, stream)
        assert meta_without_timings(back, name) == meta_without_timings(dataset, name)
    # the GT is stored once per clip: the K = 2 entries share one sample
    with tarfile.open(out / index["shards"][0]["name"]) as tar:
        members = tar.getnames()
    assert sum(".gt." in m for m in members) == 6 * sum(len(s["samples"]) for s in index["shards"][:1])


def test_shards_are_webdataset_samples_and_byte_identical_between_runs(dataset, tmp_path):
    import webdataset as wds

    a, b = tmp_path / "a", tmp_path / "b"
    assert pack(dataset, a) == 0 and pack(dataset, b) == 0
    assert {p: (a / p).read_bytes() for p in tree_files(a)} == {p: (b / p).read_bytes() for p in tree_files(b)}
    samples = list(wds.WebDataset(str(a / pf.shard_name(0)), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["000000", "000001", "000002"]
    record = json.loads(samples[0]["clip.json"])
    assert [e["meta"]["name"] for e in record["entries"]] == ["video_clip0", "video_clip0__m1"]
    assert "gt.00005.png" in samples[0] and "e1.hallucination.00000.png" in samples[0] or record["entries"][1]["boxes"][0] is None


def test_a_negative_is_stored_as_its_hole_box_crop():
    gt = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    hole = np.zeros((6, 8), bool)
    hole[2:4, 3:6] = True
    neg = np.where(hole[..., None], 255 - gt, gt)
    box = pf.hole_box(hole)
    assert box == (2, 4, 3, 6) and pf.hole_box(np.zeros((6, 8), bool)) is None
    assert pf.outside_box_equal(neg, gt, box) and not pf.outside_box_equal(neg, gt, None)
    assert np.array_equal(pf.restore_negative(gt, pf.crop(neg, box).copy(), box), neg)


def test_manifest_selection_packs_only_the_selected_negatives(dataset, tmp_path):
    manifest = json.loads((dataset / fmt.MANIFEST_FILE).read_text())
    for video in manifest["videos"][1:]:
        video["negatives"] = [n for n in video["negatives"] if n["type"] == "blur"]
        video["neg_types"] = ["blur"]
    manifest["videos"] = manifest["videos"][1:]
    selected = tmp_path / "manifest.selected.json"
    selected.write_text(json.dumps(manifest))
    out, back = tmp_path / "packed", tmp_path / "back"
    assert pack(dataset, out, "--manifest", selected) == 0
    index = json.loads((out / pf.INDEX_FILE).read_text())
    assert (index["num_videos"], index["num_pairs"]) == (5, 5)
    assert regdpo_main(["unpack", str(out), str(back), "--no_progress"]) == 0
    assert regdpo_main(["verify", str(back)]) == 0
    assert [s.stream for s in fmt.read_video_meta(back, "video_clip1").streams] == ["blur"]


def test_unpack_gives_back_a_selections_pair_weights(dataset, tmp_path, capsys):
    """``select --weights`` writes pair weights into the selected manifest; pack keeps them in the shards;
    unpack writes them back as manifest.selected.json, which the folder reader then weighs the same."""
    from types import SimpleNamespace

    from regdpo.dataset import DPODataset
    from helpers import FakeTokenizer

    manifest = json.loads((dataset / fmt.MANIFEST_FILE).read_text())
    weights = {}
    for k, video in enumerate(manifest["videos"]):
        for j, negative in enumerate(video["negatives"]):
            negative["pair_weight"] = weights[video["name"], negative["stream"]] = round(0.5 + 0.25 * k + 0.1 * j, 4)
    selected = tmp_path / "manifest.selected.json"
    selected.write_text(json.dumps(manifest))
    out, back = tmp_path / "packed", tmp_path / "back"
    assert pack(dataset, out, "--manifest", selected) == 0
    capsys.readouterr()
    assert regdpo_main(["unpack", str(out), str(back), "--no_progress"]) == 0
    assert "pair weights in manifest.selected.json" in capsys.readouterr().out
    again = json.loads((back / fmt.SELECTED_MANIFEST_FILE).read_text())
    assert {(v["name"], n["stream"]): n["pair_weight"] for v in again["videos"] for n in v["negatives"]} == weights
    assert "pair_weight" not in (back / fmt.MANIFEST_FILE).read_text()
    assert regdpo_main(["verify", str(back)]) == 0
    args = SimpleNamespace(dpo_data_root=str(back), nframes=4, resolution=64, dataset_seed=0,
                           manifest=str(back / fmt.SELECTED_MANIFEST_FILE))
    reader = DPODataset(args, FakeTokenizer())
    item = reader[3]
    assert item["pair_weight"] == weights[item["video"], item["stream"]]
    # without weights in the shards, unpack writes no selected manifest
    plain = tmp_path / "plain"
    assert pack(dataset, tmp_path / "packed_plain") == 0
    assert regdpo_main(["unpack", str(tmp_path / "packed_plain"), str(plain), "--no_progress"]) == 0
    assert not (plain / fmt.SELECTED_MANIFEST_FILE).exists()


def test_a_killed_pack_resumes_into_the_same_bytes(dataset, tmp_path, monkeypatch, capsys):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert pack(dataset, whole, "--shard_size", "1") == 0  # one sample per shard
    commit = pack_mod.ShardWriter.commit
    calls = []

    def commit_then_die(self):
        calls.append(self.name)
        if len(calls) == 2:  # the second shard is written but never committed
            raise KeyboardInterrupt
        return commit(self)

    monkeypatch.setattr(pack_mod.ShardWriter, "commit", commit_then_die)
    assert pack(dataset, killed, "--shard_size", "1") == 130
    monkeypatch.setattr(pack_mod.ShardWriter, "commit", commit)
    assert sorted(p.name for p in killed.glob("shard-*")) == [pf.shard_name(0)]  # complete or absent
    assert not list((killed / pf.PACK_WORK_DIR).glob("*.partial"))
    assert pack(dataset, killed, "--shard_size", "1") == 2  # not empty: --resume needed
    assert "--resume" in capsys.readouterr().err
    assert pack(dataset, killed, "--shard_size", "1", "--resume") == 0
    assert {p: (whole / p).read_bytes() for p in tree_files(whole)} == {p: (killed / p).read_bytes() for p in tree_files(killed)}
    assert pack(dataset, killed, "--resume") == 0  # finished: nothing to do


def test_a_video_that_cannot_be_packed_is_one_line_and_the_rest_is_packed(dataset, tmp_path, capsys):
    broken = tmp_path / "data"
    shutil.copytree(dataset, broken)
    frame = broken / "video_clip1__m1" / "blur" / "00002.png"
    image = cv2.imread(str(frame))
    image[0, 0] = 255 - image[0, 0]  # a pixel outside the hole changed: not a regdpo negative
    mask = cv2.imread(str(broken / "video_clip1__m1" / fmt.MASK_DIR / "00002.png"), cv2.IMREAD_GRAYSCALE)
    assert mask[0, 0] == 0
    cv2.imwrite(str(frame), image)
    out = tmp_path / "packed"
    assert pack(broken, out) == 1
    err = capsys.readouterr().err
    assert "video_clip1__m1" in err and "00002.png" in err and "Traceback" not in err
    index = json.loads((out / pf.INDEX_FILE).read_text())
    assert index["num_videos"] == 5 and [f["name"] for f in index["failed"]] == ["video_clip1__m1"]
    assert tree_files(tmp_path / "data") == tree_files(dataset)


def _rewrite_member(shard: Path, drop: str | None = None, change: str | None = None) -> None:
    """Rewrite a shard without member ``drop`` / with one byte of ``change`` flipped (a valid tar)."""
    src = tarfile.open(shard)
    items = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    src.close()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as dst:
        for member, data in items:
            if member.name == drop:
                continue
            if member.name == change:
                data = data[:40] + bytes([data[40] ^ 1]) + data[41:]
            dst.addfile(member, io.BytesIO(data))
    shard.write_bytes(buf.getvalue())


@pytest.mark.parametrize("damage", ["truncated", "hash", "missing_stream"])
def test_verify_names_the_damaged_shard_in_one_line(dataset, tmp_path, capsys, damage):
    out = tmp_path / "packed"
    assert pack(dataset, out, "--shard_size", "1") == 0
    shard = out / pf.shard_name(1)
    index_path = out / pf.INDEX_FILE
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif damage == "hash":
        data = bytearray(shard.read_bytes())
        data[-10] ^= 1  # in the end-of-archive blocks: every sample reads, but the bytes are not the packed ones
        shard.write_bytes(bytes(data))
    else:
        _rewrite_member(shard, drop="000001.e0.mask.00003.png")
        index = json.loads(index_path.read_text())  # the index agrees with the shard: only the stream is missing
        import hashlib

        index["shards"][1].update(bytes=shard.stat().st_size, sha256=hashlib.sha256(shard.read_bytes()).hexdigest())
        index_path.write_text(json.dumps(index))
    capsys.readouterr()
    assert regdpo_main(["verify", str(out)]) == 1
    lines = [l for l in capsys.readouterr().out.splitlines() if not l.startswith(str(out))]
    assert len(lines) == 1 and lines[0].startswith(pf.shard_name(1)), lines
    assert {"truncated": "truncated", "hash": "SHA-256", "missing_stream": "e0.mask.00003.png"}[damage] in lines[0]


def test_verify_and_unpack_read_a_packed_dataset_at_a_url(dataset, tmp_path, capsys):
    """A packed dataset in object storage is verified and unpacked through fsspec, without a local copy
    (fsspec's in-memory filesystem stands in for s3:// / gs://); a damaged remote shard is one line."""
    fsspec = pytest.importorskip("fsspec")
    out = tmp_path / "packed"
    assert pack(dataset, out, "--shard_size", "1") == 0
    memory = fsspec.filesystem("memory")
    prefix = f"memory://regdpo-test-{tmp_path.name}"
    for path in sorted(out.iterdir()):
        memory.pipe(f"{prefix}/{path.name}", path.read_bytes())
    try:
        capsys.readouterr()
        assert regdpo_main(["verify", prefix]) == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith(prefix) and "0 with problems" in line, line
        back = tmp_path / "back"
        assert regdpo_main(["unpack", prefix, str(back), "--no_progress"]) == 0
        assert regdpo_main(["verify", str(back)]) == 0
        assert sorted(fmt.complete_videos(back)) == sorted(fmt.complete_videos(dataset))
        shard = f"{prefix}/{pf.shard_name(1)}"
        memory.pipe(shard, memory.cat(shard)[:-700])  # cut short
        capsys.readouterr()
        assert regdpo_main(["verify", prefix]) == 1
        found = [line for line in capsys.readouterr().out.splitlines() if pf.shard_name(1) in line]
        assert len(found) == 1 and "Traceback" not in found[0], found
        assert regdpo_main(["verify", "memory://regdpo-test-nothing-here"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "index.json" in err[0], err
    finally:
        memory.rm(prefix, recursive=True)
