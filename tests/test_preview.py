"""`regdpo preview`: side-by-side MP4 (decodable, right size and frame count), GIF, contact sheet."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from regdpo import format as fmt
from regdpo.audit import media
from regdpo.audit import synthetic as S
from regdpo.cli import main

T, H, W = 10, 96, 160


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview") / "dpo_data"
    clips = {"tex-a": S.textured_clip(T, H, W, seed=1), "tex-b": S.textured_clip(T, H, W, seed=2, speed=0.5)}
    names = S.build_dataset(root, clips, wrong=False)
    return root, names


def _decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    cap.release()
    return frames


def _expected_size(scale: float = 1.0) -> tuple[int, int]:
    h = int(round(H * scale))
    bar = media.label_bar_height(h)
    w = 5 * int(round(W * scale)) + 4 * 4  # GT, GT + hole, three negatives, 4 px gaps
    return h + bar + (h + bar) % 2, w + w % 2


def test_mp4_decodes_with_expected_frames_and_size(dataset, tmp_path):
    root, names = dataset
    out = tmp_path / "prev"
    assert main(["preview", str(root), "--output-dir", str(out), "--gif"]) == 0
    for name in names:
        frames = _decode(out / f"{name}.mp4")
        assert len(frames) == T
        assert frames[0].shape[:2] == _expected_size()
        with Image.open(out / f"{name}.gif") as gif:
            assert gif.n_frames == T and gif.size[::-1] == _expected_size()
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 2 * 96 and sheet.shape[1] > 2 * 5 * 96 * W // H


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb.astype(np.uint8)), cv2.COLOR_RGB2GRAY)


def test_mp4_is_visually_lossless_and_deterministic(dataset, tmp_path):
    root, names = dataset
    video = names[0]
    for k in (1, 2):
        assert main(["preview", str(root), "--video", video, "--output-dir", str(tmp_path / f"run{k}"),
                     "--sheet-videos", "0"]) == 0
    assert main(["preview", str(root), "--video", video, "--output-dir", str(tmp_path / "full"),
                 "--sheet-videos", "0", "--pix-fmt", "yuv444p"]) == 0
    a, b = (tmp_path / f"run{k}" / f"{video}.mp4" for k in (1, 2))
    assert a.read_bytes() == b.read_bytes()
    assert not (tmp_path / "run1" / "contact_sheet.png").exists()
    # the GT tile of a decoded frame matches the stored GT frame closely (not a low-bitrate encode);
    # the clip is per-channel noise, the worst case for 4:2:0 chroma, so yuv420p is judged on luma
    gt = cv2.imread(str(root / video / fmt.GT_DIR / fmt.frame_name(4)))[:, :, ::-1]
    bar = media.label_bar_height(H)
    tile = _decode(a)[4][bar : bar + H, :W]
    assert _psnr(_luma(tile), _luma(gt)) > 38
    tile444 = _decode(tmp_path / "full" / f"{video}.mp4")[4][bar : bar + H, :W]
    assert _psnr(tile444, gt) > 36


def test_scale_and_default_output_dir(dataset):
    root, names = dataset
    assert main(["preview", str(root), "--video", names[1], "--scale", "2", "--max-videos", "1"]) == 0
    frames = _decode(root / "_preview" / f"{names[1]}.mp4")
    assert len(frames) == T and frames[0].shape[:2] == _expected_size(2.0)
    assert fmt.complete_videos(root) == sorted(names)  # _preview is not mistaken for a video


def test_preview_errors_name_the_flag_or_video(dataset, capsys):
    root, _ = dataset
    assert main(["preview", str(root), "--video", "nope"]) == 2
    assert "--video nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # a numeric flag is checked while the flags are parsed
        main(["preview", str(root), "--scale", "0"])
    assert refused.value.code == 2 and "argument --scale: '0': must be a number > 0" in capsys.readouterr().err
