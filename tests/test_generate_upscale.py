"""Generator --max_upscale: sources needing more enlargement than allowed are skipped with the reason."""

import cv2
import pytest

from regdpo import format as fmt
from regdpo.cli import main as regdpo_main
from regdpo.generate.clips import upscale_factor, working_size
from regdpo.generate.config import GenerateConfig
from regdpo.generate.samples import sample_videos
from regdpo.writer import read_failure
from helpers import DATA, needs_data


def generate(*flags):
    return regdpo_main(["generate", "--no_progress", *map(str, flags)])


def test_upscale_factor():
    assert upscale_factor(working_size(854, 480, 512)) == pytest.approx(912 / 854)  # DAVIS 480p: 1.07
    assert upscale_factor(working_size(176, 144, 512)) == pytest.approx(512 / 144)  # carphone: 3.56
    assert upscale_factor(working_size(1280, 720, 512)) < 1
    assert upscale_factor(working_size(640, 272, 256, center_crop=True)) == pytest.approx(256 / 272)


def test_the_default_run_keeps_at_least_one_embedded_sample():
    """At the default resolution and --max_upscale, some embedded sample is large enough (a dataset results)."""
    config = GenerateConfig(output_dir="x")
    factors = {}
    for path in sample_videos():
        capture = cv2.VideoCapture(str(path))
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        capture.release()
        factors[path.stem] = upscale_factor(working_size(width, height, config.resolution))
    assert config.max_upscale == 1.25 and config.resolution == 512
    assert factors["bigbuckbunny"] <= 1.25 and factors["carphone_pristine"] > 1.25


def test_small_samples_are_skipped_with_an_upscale_reason(tmp_path, capsys):
    out = tmp_path / "dpo_data"
    assert generate("--output_dir", out, "--nframes", 6, "--resolution", 256, "--neg_types", "blur") == 0
    assert fmt.complete_videos(out) == ["sample_bigbuckbunny", "sample_bikes"]  # 720p, 272p at 256: shrunk
    record = read_failure(out, "sample_carphone_pristine")  # 144p -> 256: 1.78x
    assert record["status"] == "skipped" and "1.78x upscale" in record["reason"]
    assert "--max_upscale 1.25" in record["reason"]
    printed = capsys.readouterr().out
    assert "skipped sample_carphone_pristine: needs a 1.78x upscale" in printed


@needs_data
def test_davis_fixtures_at_512_need_a_lower_resolution_or_max_upscale(tmp_path):
    """The shared DAVIS copies are 432x240: 2.13x at 512, skipped unless --max_upscale allows it."""
    common = ["--davis_root", DATA / "DAVIS", "--max_videos", 1, "--nframes", 4, "--neg_types", "blur",
              "--resolution", 512]
    assert generate(*common, "--output_dir", tmp_path / "a") == 0
    assert fmt.complete_videos(tmp_path / "a") == []
    assert "upscale" in read_failure(tmp_path / "a", "davis_bmx-trees")["reason"]
    assert generate(*common, "--output_dir", tmp_path / "b", "--max_upscale", 2.2) == 0
    assert fmt.complete_videos(tmp_path / "b") == ["davis_bmx-trees"]


def test_bad_max_upscale_is_a_usage_error(tmp_path, capsys):
    assert generate("--output_dir", tmp_path / "o", "--max_upscale", "0.9") == 2
    assert "--max_upscale" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # nan: refused while the flags are parsed
        generate("--output_dir", tmp_path / "o", "--max_upscale", "nan")
    assert refused.value.code == 2 and "argument --max_upscale" in capsys.readouterr().err
