"""Numeric flags of ``train_region_reg_dpo.py``, ``regdpo score`` and ``regdpo generate --engine ray`` refuse
``nan``, ``inf`` and absurd values while parsing, naming the flag (exit 2); every usage error of
``train_region_reg_dpo.py`` is one line (exit 2), never the usage block or a traceback."""

import pytest

from regdpo.cli import main as regdpo_main
from regdpo.train.loop import main as train_main


def weights_and_data(tmp_path) -> list[str]:
    for name in ("sd15", "vae", "de", "data"):
        (tmp_path / name).mkdir(exist_ok=True)
    return ["--base_model_name_or_path", str(tmp_path / "sd15"), "--vae_path", str(tmp_path / "vae"),
            "--diffueraser_path", str(tmp_path / "de"), "--dpo_data_root", str(tmp_path / "data")]


def one_line(err: str, prefix: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err and "usage:" not in err
    return lines[0]


TRAIN_REFUSED = [
    ("--learning_rate", "nan"), ("--learning_rate", "inf"), ("--learning_rate", "0"), ("--learning_rate", "1e12"),
    ("--beta_dpo", "inf"), ("--beta_dpo", "0"), ("--beta_dpo", "1e300"), ("--loser_clip", "nan"),
    ("--loser_weight", "-inf"), ("--sft_weight", "nan"), ("--anchor_weight", "1e12"), ("--w_hole", "nan"),
    ("--w_boundary", "inf"), ("--w_context", "-1"), ("--adam_beta1", "1"), ("--adam_beta2", "nan"),
    ("--adam_epsilon", "0"), ("--adam_weight_decay", "inf"), ("--max_grad_norm", "nan"), ("--max_grad_norm", "0"),
    ("--nframes", "1000000000"), ("--nframes", "0"), ("--resolution", "1e12"), ("--resolution", "1000000000000"),
    ("--boundary_dilation", "1000000000"), ("--train_batch_size", "1000000000"), ("--train_batch_size", "0"),
    ("--gradient_accumulation_steps", "0"), ("--max_train_steps", "1e12"), ("--max_train_steps", "99999999999999"),
    ("--lr_warmup_steps", "-1"), ("--checkpointing_steps", "0"), ("--checkpoints_total_limit", "0"),
    ("--seed", "-1"), ("--seed", "99999999999"), ("--dataloader_num_workers", "1000000"),
    ("--saturation_window", "0"),
]


@pytest.mark.parametrize("flag, value", TRAIN_REFUSED, ids=[f"{f}={v}" for f, v in TRAIN_REFUSED])
def test_train_numbers_are_refused_while_parsing_naming_the_flag(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as refused:
        train_main([*weights_and_data(tmp_path), f"{flag}={value}"])  # = : a value may start with -
    line = one_line(capsys.readouterr().err, "train_region_reg_dpo.py: error: ")
    assert refused.value.code == 2 and f"argument {flag}: {value!r}" in line, line


def test_train_accepts_the_values_it_always_took(tmp_path):
    from regdpo.train.loop import build_parser

    args = build_parser().parse_args([*weights_and_data(tmp_path), "--learning_rate", "1e-5", "--beta_dpo", "5000",
                                      "--loser_clip", "-1", "--w_context", "0", "--adam_beta1", "0", "--seed", "0",
                                      "--max_grad_norm", "0.5", "--boundary_dilation", "9", "--resolution", "256"])
    assert (args.learning_rate, args.beta_dpo, args.loser_clip, args.seed) == (1e-5, 5000.0, -1.0, 0)
    defaults = build_parser().parse_args(weights_and_data(tmp_path))
    assert (defaults.learning_rate, defaults.adam_epsilon, defaults.seed, defaults.checkpoints_total_limit) == \
        (1e-6, 1e-8, None, None)
    from regdpo.train.loop import step_config

    assert step_config(args).loser_clip is None and step_config(args).problems() == []


@pytest.mark.parametrize("argv, says", [
    ([], "the following arguments are required: --base_model_name_or_path"),
    (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
    (["--train_modules", "all"], "argument --train_modules: invalid choice: 'all'"),
    (["--nframes", "ten"], "argument --nframes: 'ten' is not an integer"),
], ids=["missing", "unknown", "choice", "not-a-number"])
def test_train_argparse_errors_are_one_line(tmp_path, capsys, argv, says):
    full = argv if not argv else [*weights_and_data(tmp_path), *argv]
    with pytest.raises(SystemExit) as refused:
        train_main(full)
    line = one_line(capsys.readouterr().err, "train_region_reg_dpo.py: error: ")
    assert refused.value.code == 2 and says in line, line


def test_train_check_problems_are_one_line_naming_each(tmp_path, capsys):
    argv = [*weights_and_data(tmp_path), "--resolution", "60", "--boundary_dilation", "8"]
    assert train_main(argv) == 2
    line = one_line(capsys.readouterr().err, "train_region_reg_dpo.py: error: ")
    assert "--resolution 60" in line and "--boundary_dilation 8: must be odd" in line
    assert "--vae_path" in line and "config.json not found" in line  # the weight folders are empty


SCORE_REFUSED = [("--nframes", "1000000000"), ("--resolution", "1e12"), ("--num_timesteps", "1000000"),
                 ("--num_timesteps", "0"), ("--num_noises", "1000000000"), ("--num_noises", "0"), ("--w_hole", "nan"),
                 ("--w_boundary", "inf"), ("--w_context", "-1"), ("--boundary_dilation", "1000000000"),
                 ("--seed", "1.5")]


@pytest.mark.parametrize("flag, value", SCORE_REFUSED, ids=[f"{f}={v}" for f, v in SCORE_REFUSED])
def test_score_numbers_are_refused_while_parsing_naming_the_flag(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as refused:
        regdpo_main(["score", str(tmp_path), "--base_model_path", str(tmp_path), "--vae_path", str(tmp_path),
                     "--diffueraser_path", str(tmp_path), f"{flag}={value}"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and f"error: argument {flag}: {value!r}" in err and "Traceback" not in err, err


RAY_REFUSED = [("--workers", "0"), ("--workers", "1e3"), ("--workers", "1000000000"), ("--gpus_per_worker", "nan"),
               ("--gpus_per_worker", "inf"), ("--gpus_per_worker", "1e12")]


@pytest.mark.parametrize("flag, value", RAY_REFUSED, ids=[f"{f}={v}" for f, v in RAY_REFUSED])
def test_ray_engine_numbers_are_refused_while_parsing_naming_the_flag(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as refused:
        regdpo_main(["generate", "--engine", "ray", f"{flag}={value}", "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and f"error: argument {flag}: {value!r}" in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_ray_engine_flags_keep_their_values():
    import argparse

    from regdpo.generate.cli import configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--engine", "ray", "--workers", "3", "--gpus_per_worker", "0.5"])
    assert (args.workers, args.gpus_per_worker) == (3, 0.5)


def test_a_negative_gpus_per_worker_is_refused_by_the_config(tmp_path, capsys):
    assert regdpo_main(["generate", "--engine", "ray", "--gpus_per_worker=-0.5", "--output_dir",
                        str(tmp_path / "o")]) == 2
    assert "--gpus_per_worker must be a number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
