"""The shard reader (DPODataset with args.dpo_shards): same tensors as the folder reader, ranks x workers
exactly once, resume mid-epoch from the state dict, damaged shards skipped and counted."""

import json
import logging
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from regdpo import packed_format as pf
from regdpo.cli import main as regdpo_main
from regdpo.dataset import DPODataset, collate_fn
from regdpo.errors import UsageError
from regdpo.packed_dataset import PackedDPODataset

from helpers import FakeTokenizer
from test_pack import generate_small, make_videos


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 clips x 2 masks x (blur, hallucination) = 16 pairs of 6 frames at 64 x 85, packed one clip a shard."""
    base = tmp_path_factory.mktemp("reader")
    root = generate_small(base / "dpo_data", make_videos(base / "videos", count=4))
    packed = base / "packed"
    assert regdpo_main(["pack", str(root), str(packed), "--shard_size", "1", "--no_progress"]) == 0
    return root, packed


def args(root, packed=None, **kw):
    base = dict(dpo_data_root=str(root), nframes=4, resolution=48, boundary_dilation=7, dataset_seed=3,
                random_flip=True, random_reverse=True, proportion_empty_prompts=0.3, shuffle_buffer=4)
    if packed is not None:
        base["dpo_shards"] = packed if isinstance(packed, list) else str(packed)
    base.update(kw)
    return SimpleNamespace(**base)


def pair_id(item):
    return item["video"], item["neg_type"], round(float(item["neg_strength"]), 2)


def ids(items):
    return [pair_id(i) for i in items]


@pytest.mark.parametrize("extra", [{}, {"full_frame": True}, {"center_crop": True, "min_hole_coverage": 0.0}])
def test_shard_reader_gives_the_folder_readers_tensors_on_every_field(data, extra):
    root, packed = data
    folder = DPODataset(args(root, **extra), FakeTokenizer())
    shards = DPODataset(args(root, packed, **extra), FakeTokenizer())
    assert isinstance(shards, PackedDPODataset) and len(shards) == len(folder) == 16
    index_of = {(p.video, p.neg_type, p.neg_strength): i for i, p in enumerate(folder.pairs)}
    for epoch in (0, 1):
        folder.set_epoch(epoch)
        shards.set_epoch(epoch)
        items = list(shards)
        assert sorted(ids(items)) == sorted(index_of)  # every pair once
        for item in items:
            want = folder[index_of[pair_id(item)]]
            assert set(item) == set(want) | {"stream_position"}
            for key, value in want.items():
                if isinstance(value, torch.Tensor):
                    assert value.dtype == item[key].dtype and torch.equal(value, item[key]), (key, pair_id(item))
                else:
                    assert value == item[key], key


def test_the_order_is_shuffled_seeded_and_changes_with_the_epoch(data):
    root, packed = data
    a, b = DPODataset(args(root, packed), FakeTokenizer()), DPODataset(args(root, packed), FakeTokenizer())
    first = ids(a)
    assert first == ids(b)  # same seed, same epoch: the same stream
    a.set_epoch(1)
    assert ids(a) != first and sorted(ids(a)) == sorted(first)
    c = DPODataset(args(root, packed, dataset_seed=4), FakeTokenizer())
    assert ids(c) != first


def loader(dataset, workers=2, batch=2):
    return torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate_fn)


def batch_ids(batch):
    return list(zip(batch["video"], batch["neg_type"], [round(float(s), 2) for s in batch["neg_strength"]]))


def test_two_ranks_by_two_workers_see_every_pair_exactly_once(data):
    root, packed = data
    everything = sorted(ids(DPODataset(args(root, packed), FakeTokenizer())))
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            ds = DPODataset(args(root, packed, rank=rank, world_size=2), FakeTokenizer())
            ds.set_epoch(epoch)
            assert len(ds) == 8  # two of the four shards, 4 pairs each
            for batch in loader(ds):
                seen += batch_ids(batch)
        assert Counter(seen) == Counter(everything) and len(seen) == 16


@pytest.mark.parametrize("workers", [0, 2])
def test_a_reader_restored_from_its_state_dict_finishes_the_epoch_without_repeats(data, workers):
    root, packed = data
    states, first_part = [], []
    for rank in (0, 1):
        ds = DPODataset(args(root, packed, rank=rank, world_size=2), FakeTokenizer())
        ds.set_epoch(1)
        for n, batch in enumerate(loader(ds, workers, batch=1)):
            if n == 3:  # preempted after 3 consumed batches; prefetched ones do not count
                break
            ds.advance(batch)
            first_part += batch_ids(batch)
        states.append(json.loads(json.dumps(ds.state_dict())))  # it goes through a checkpoint
    state = PackedDPODataset.merge_states(states)
    assert state["epoch"] == 1 and len(state["positions"]) == (4 if workers else 2)
    rest = []
    for rank in (0, 1):
        ds = DPODataset(args(root, packed, rank=rank, world_size=2), FakeTokenizer())
        ds.load_state_dict(state)
        for batch in loader(ds, workers, batch=1):
            rest += batch_ids(batch)
    assert len(first_part) == 6 and not set(first_part) & set(rest)
    assert Counter(first_part + rest) == Counter(ids(DPODataset(args(root, packed), FakeTokenizer())))
    ds.set_epoch(2)  # the next epoch starts from its beginning
    assert len(list(ds)) == 8


def test_a_state_from_other_settings_is_refused(data):
    root, packed = data
    ds = DPODataset(args(root, packed), FakeTokenizer())
    state = ds.state_dict()
    other = DPODataset(args(root, packed, shuffle_buffer=8), FakeTokenizer())
    with pytest.raises(UsageError, match="shuffle_buffer"):
        other.load_state_dict(state)
    with pytest.raises(UsageError, match="rank 4 has none"):  # 4 shards, 5 ranks
        DPODataset(args(root, packed, rank=4, world_size=5), FakeTokenizer())


def test_shards_given_as_a_list_of_paths_read_only_those(data):
    root, packed = data
    ds = DPODataset(args(root, [str(packed / pf.shard_name(0)), str(packed / pf.shard_name(2))]), FakeTokenizer())
    assert len(ds) == 8 and len(set(ids(ds))) == 8
    with pytest.raises(UsageError, match="not listed"):
        DPODataset(args(root, [str(packed / "shard-000009.tar")]), FakeTokenizer())


def damage(packed: Path, tmp_path: Path, kind: str) -> Path:
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(packed, out)
    shard = out / pf.shard_name(1)
    if kind == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    elif kind == "missing_stream":
        from test_pack import _rewrite_member

        _rewrite_member(shard, drop="000001.e1.blur.00002.png")
    else:  # a frame that does not decode, same size: only the hash tells
        data = bytearray(shard.read_bytes())
        start = data.index(b"IDAT", data.index(b"000001.gt.00001.png")) + 20
        data[start:start + 8] = b"\x00" * 8
        shard.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("kind", ["truncated", "missing_stream", "corrupt_frame"])
def test_damaged_samples_are_skipped_counted_and_the_epoch_goes_on(data, tmp_path, caplog, kind):
    root, packed = data
    damaged = damage(packed, tmp_path, kind)
    ds = DPODataset(args(root, damaged), FakeTokenizer())
    with caplog.at_level(logging.WARNING, logger="regdpo"):
        items = list(ds)
    lost = 16 - len(items)
    if kind == "corrupt_frame":  # the pairs whose window holds the frame; the shard's hash tells too
        assert 1 <= lost <= 4 and ds.damaged_shards == 1
    else:  # the whole sample (source clip video_clip1: its 2 entries x 2 negatives)
        assert lost == 4 and not [i for i in items if i["video"].startswith("video_clip1")]
    assert ds.skipped_pairs == lost and len(set(ids(items))) == len(items)
    assert any(pf.shard_name(1) in r.getMessage() for r in caplog.records)
    assert "Traceback" not in caplog.text
    assert sorted(p.name for p in damaged.iterdir()) == sorted(p.name for p in packed.iterdir())  # nothing written


def test_a_packed_selection_reads_as_the_folder_reader_of_that_manifest(data, tmp_path):
    """A selected manifest (fewer negatives, pair weights, videos out of name order) packed and read back."""
    root, _ = data
    manifest = json.loads((root / "manifest.json").read_text())
    for k, video in enumerate(manifest["videos"]):
        video["negatives"] = [dict(n, pair_weight=0.5 + k) for n in video["negatives"] if k % 2 or n["type"] == "blur"]
        video["neg_types"] = sorted({n["type"] for n in video["negatives"]})
    manifest["videos"] = manifest["videos"][::-1]
    selected = tmp_path / "manifest.selected.json"
    selected.write_text(json.dumps(manifest))
    packed = tmp_path / "packed"
    assert regdpo_main(["pack", str(root), str(packed), "--manifest", str(selected), "--no_progress"]) == 0
    folder = DPODataset(args(root, manifest=str(selected)), FakeTokenizer())
    shards = DPODataset(args(root, packed), FakeTokenizer())
    items = list(shards)
    assert len(items) == len(folder) == 12
    index_of = {(p.video, p.neg_type, p.neg_strength): i for i, p in enumerate(folder.pairs)}
    for item in items:
        want = folder[index_of[pair_id(item)]]
        assert item["pair_weight"] == want["pair_weight"] != 1.0 and item["stream"] == want["stream"]
        assert all(torch.equal(v, item[k]) for k, v in want.items() if isinstance(v, torch.Tensor))


def test_merged_states_take_each_ranks_streams_and_epoch_from_that_rank():
    stale = {"format": "regdpo-shard-reader", "version": 1, "rank": 0, "epoch": 3, "epochs": {"0": 3, "1": 2},
             "positions": {"0/0": [5, 0, 0], "1/0": [1, 0, 0]}}  # rank 0 still holds rank 1's older position
    fresh = {"format": "regdpo-shard-reader", "version": 1, "rank": 1, "epoch": 2, "epochs": {"1": 2},
             "positions": {"1/0": [4, 1, 1], "0/0": [2, 0, 0]}}
    for order in ([stale, fresh], [fresh, stale]):
        merged = PackedDPODataset.merge_states(order)
        assert merged["positions"] == {"0/0": [5, 0, 0], "1/0": [4, 1, 1]} and merged["epochs"] == {"0": 3, "1": 2}


def test_the_folder_readers_upscale_policy_applies_to_shards(data):
    root, packed = data  # stored at short side 64: 128 enlarges 2x, more than max_upscale 1.25
    with pytest.raises(UsageError, match="max_upscale"):
        DPODataset(args(root, packed, resolution=128), FakeTokenizer())
    assert len(DPODataset(args(root, packed, resolution=128, max_upscale=2.0), FakeTokenizer())) == 16


def test_bench_pack_reads_whole_epochs_and_counts_the_workers_cpu(data):
    """bench/bench_pack.py's reading run: one whole epoch, every item consumed, in one process and through
    2 workers (whose CPU time it counts); its hand-over figures are of the collated batch."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_pack

    root, packed = data
    for dataset in (DPODataset(args(root), FakeTokenizer()), DPODataset(args(root, packed), FakeTokenizer())):
        for workers in (0, 2):
            reading = bench_pack.read_epoch(dataset, workers, epoch=1)
            assert reading.items == len(dataset) == 16
            assert (reading.worker_cpu_s > 0) == (workers > 0) and reading.main_cpu_s > 0
            assert reading.first_s > 0 and reading.steady_s > 0 and reading.rate > 0
    item = next(iter(dataset))
    batch = collate_fn([item])
    costs = bench_pack.handover(item)
    assert costs["mb"] == sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor)) / 1e6
    assert all(costs[k] >= 0 for k in ("collate", "share", "free", "stack_shared"))
