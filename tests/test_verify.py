"""`regdpo verify`: a full decode of every file finds what header checks miss (truncated bodies, placeholder
files), every invariant is checked, checksums recorded at commit time find changed bytes, and a copied
dataset verifies."""

import json
import shutil
import zlib

import numpy as np
import pytest
from PIL import Image

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from regdpo.outputs import owned_video
from regdpo.verify import verify_dataset
from helpers import write_pair_dataset

SMALL = ["--nframes", "5", "--resolution", "64", "--neg_types", "blur", "--seed", "1", "--no_progress"]


@pytest.fixture
def data(tmp_path):
    return write_pair_dataset(tmp_path / "dpo", videos=(("clip_a", 5), ("clip_b", 4)), size=32)


def verify(root, capsys, *extra):
    rc = regdpo_main(["verify", str(root), *map(str, extra)])
    return rc, capsys.readouterr().out


def problem_lines(out):
    return [line for line in out.splitlines() if not line.startswith("/") and ": " in line]


def png_chunks(data):
    """(type, body) of every chunk of PNG bytes."""
    pos, chunks = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_bytes(chunks):
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        out += len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    return out


def rewrite_png(path, pixels):
    """Replace a frame with a valid PNG of other pixels (as a careless tool would)."""
    Image.fromarray(pixels).save(path)


def test_clean_dataset_passes_with_its_checksums(data, capsys):
    rc, out = verify(data, capsys)
    assert rc == 0, out
    assert "2 videos verified, 2 ok, 0 with problems, 0 problems" in out
    assert "without" not in out
    lines = (data / "clip_a" / fmt.CHECKSUMS_FILE).read_text().splitlines()
    assert len(lines) == 3 * 5 and lines == sorted(lines, key=lambda l: l.split("  ")[1])
    assert lines[0].endswith("  blur/00000.png")  # sha256sum format, paths relative to the video folder


def test_generator_output_verifies_and_checksums_are_deterministic(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert regdpo_main(["generate", "--output_dir", str(a), *SMALL]) == 0
    assert regdpo_main(["generate", "--output_dir", str(b), *SMALL]) == 0
    capsys.readouterr()
    names = fmt.complete_videos(a)
    assert names and names == fmt.complete_videos(b)
    for name in names:
        assert (a / name / fmt.CHECKSUMS_FILE).read_bytes() == (b / name / fmt.CHECKSUMS_FILE).read_bytes()
        assert owned_video(a / name) is not None  # --overwrite and prune accept the sidecar
    rc, out = verify(a, capsys)
    assert rc == 0, out
    # --resume counts them done (the sidecar is no obstacle to the completeness check)
    assert regdpo_main(["generate", "--output_dir", str(a), *SMALL, "--resume"]) == 0
    summary = capsys.readouterr()
    assert f"0 written, {len(names)} already done" in summary.out + summary.err
    assert (a / names[0] / fmt.CHECKSUMS_FILE).read_bytes() == (b / names[0] / fmt.CHECKSUMS_FILE).read_bytes()


def test_copied_dataset_verifies(data, tmp_path, capsys):
    copy = tmp_path / "elsewhere" / "dpo"
    shutil.copytree(data, copy)
    rc, out = verify(copy, capsys)
    assert rc == 0, out


def test_truncated_png_body_is_found_even_with_its_end_marker(data, capsys):
    for video in ("clip_a", "clip_b"):  # without checksums: the decode alone must find it
        (data / video / fmt.CHECKSUMS_FILE).unlink()
    path = data / "clip_a" / "blur" / "00002.png"
    chunks = png_chunks(path.read_bytes())
    chunks = [(k, b[: len(b) // 2] if k == b"IDAT" else b) for k, b in chunks]  # half the body, valid CRCs
    path.write_bytes(png_bytes(chunks))
    fmt.validate_video_streams(data, fmt.read_video_meta(data, "clip_a"))  # headers and trailer look fine
    rc, out = verify(data, capsys)
    assert rc == 1
    assert problem_lines(out) == [f"clip_a: {path}: " + problem_lines(out)[0].split(f"{path}: ", 1)[1]]
    assert "does not decode" in out
    assert "2 videos without checksums.sha256" in out and "decoded and checked" in out


def test_cut_file_is_found(data, capsys):
    path = data / "clip_b" / "gt_frames" / "00001.png"
    path.write_bytes(path.read_bytes()[:-40])
    rc, out = verify(data, capsys)
    assert rc == 1 and f"clip_b: {path}: " in out


@pytest.mark.parametrize("content", [b"", b"placeholder: download failed\n"], ids=["zero-bytes", "text"])
def test_placeholder_file_is_found(data, capsys, content):
    path = data / "clip_a" / "masks" / "00003.png"
    path.write_bytes(content)
    rc, out = verify(data, capsys)
    assert rc == 1
    assert f"clip_a: {path}: " + ("empty file" if not content else "not a PNG file") in out
    assert "1 with problems" in out


def test_flipped_byte_is_found_by_its_checksum(data, capsys):
    path = data / "clip_b" / "blur" / "00000.png"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    rc, out = verify(data, capsys)
    assert rc == 1 and f"clip_b: {path}: SHA-256 differs" in out


def test_valid_replacement_frame_is_found_by_its_checksum_only(data, capsys):
    path = data / "clip_a" / "gt_frames" / "00004.png"
    pixels = np.asarray(Image.open(path)).copy()
    hole = np.asarray(Image.open(data / "clip_a" / "masks" / "00004.png")) == 255
    pixels[hole] ^= 1  # inside the hole: every invariant still holds
    rewrite_png(path, pixels)
    rc, out = verify(data, capsys)
    assert rc == 1
    assert problem_lines(out) == [f"clip_a: {path}: SHA-256 differs from checksums.sha256 (changed or damaged "
                                  "since commit)"]


def test_missing_frame_is_found(data, capsys):
    path = data / "clip_b" / "gt_frames" / "00003.png"
    path.unlink()
    rc, out = verify(data, capsys)
    assert rc == 1 and "clip_b: " in out and f"missing {path}" in out
    assert "clip_a" not in "\n".join(problem_lines(out))


def test_difference_outside_the_hole_is_found(data, capsys, tmp_path):
    (data / "clip_a" / fmt.CHECKSUMS_FILE).unlink()
    path = data / "clip_a" / "blur" / "00001.png"
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0] ^= 0xFF  # a corner: outside the hole
    rewrite_png(path, pixels)
    report = tmp_path / "report.json"
    rc, out = verify(data, capsys, "--json", report)
    assert rc == 1 and f"clip_a: {path}: differs from the GT at 1 pixel(s) outside the hole" in out
    result = json.loads(report.read_text())
    assert result["videos_with_problems"] == ["clip_a"] and result["videos_without_checksums"] == ["clip_a"]
    assert result["problems"] == [{"video": "clip_a", "file": str(path),
                                   "problem": "differs from the GT at 1 pixel(s) outside the hole"}]


def test_non_binary_mask_and_wrong_mode_are_found(data, capsys):
    mask = data / "clip_b" / "masks" / "00000.png"
    pixels = np.asarray(Image.open(mask)).copy()
    pixels[pixels == 255] = 200
    rewrite_png(mask, pixels)
    gt = data / "clip_a" / "gt_frames" / "00000.png"
    Image.open(gt).convert("RGBA").save(gt)
    rc, out = verify(data, capsys)
    assert rc == 1
    assert f"clip_b: {mask}: mask is not binary" in out and f"clip_a: {gt}: has mode RGBA" in out


def test_bad_names_and_manifest_entries_are_reported(data, capsys):
    (data / "odd name").mkdir()
    (data / "odd name" / fmt.META_FILE).write_text("{}")
    (data / "half_copied" / fmt.GT_DIR).mkdir(parents=True)
    shutil.rmtree(data / "clip_b")  # the manifest still lists it
    result = verify_dataset(data, log=lambda line: None)
    problems = {(p["video"], p["problem"].split(" (")[0]) for p in result["problems"]}
    assert ("clip_b", "lists a video whose folder is missing") in problems
    assert any(video == "odd name" and "invalid video name" in text for video, text in problems)
    assert ("half_copied", "no meta.json: not a complete video") in problems
    assert result["videos_ok"] == 1


def test_damaged_checksums_file_is_reported(data, capsys):
    path = data / "clip_a" / fmt.CHECKSUMS_FILE
    path.write_text(path.read_text().splitlines()[0][:20] + "\n")
    rc, out = verify(data, capsys)
    assert rc == 1 and f"clip_a: {path}: unreadable checksums" in out


def test_missing_root_is_a_usage_error(tmp_path, capsys):
    assert regdpo_main(["verify", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
