"""The Region-Reg-DPO training loop behind ``train_region_reg_dpo.py`` (``accelerate``).

DiffuEraser's training-script conventions (stage 2's flag names where they mean the same):
``accelerate`` for several GPUs and mixed precision, gradient accumulation, ``checkpoint-N``
folders from ``accelerator.save_state`` every ``--checkpointing_steps`` and
``--resume_from_checkpoint PATH|latest``. Per optimizer step one JSON line goes to
``{output_dir}/metrics.jsonl`` (diagnostics averaged over the accumulated micro-batches and the
processes). The end writes ``{output_dir}/unet_main/`` and ``{output_dir}/brushnet/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..cli_types import MAX_FRAMES, MAX_SIDE, MAX_WORKERS, OneLineParser, integer, real
from ..errors import DATA_EXIT, RegdpoError, UsageError, exit_code, os_error_line
from .config import LATENT_SAMPLING, LOSS_FORMS, TRAIN_MODULES, DPOStepConfig
from .optim import optional_package_problems
from .tracking import REPORT_TO

METRICS_FILE = "metrics.jsonl"
LOGGED = ("loss", "dpo_loss", "implicit_acc", "implicit_acc_margin", "loser_dominant_ratio", "win_gap", "lose_gap",
          "inside_term_mean", "mse_w", "mse_l", "ref_mse_w", "ref_mse_l", "sft_loss", "anchor_loss")


MAX_STEPS = 10**9  # optimizer steps, warm-up steps, checkpoint intervals
MAX_BATCH = 65_536  # pairs per device and micro-batch
MAX_WEIGHT = 1e6  # loss weights and beta: beyond this the loss is all one term or overflows fp32
MAX_SEED = 2**32 - 1  # what numpy's seeding (accelerate's set_seed) accepts


def build_parser() -> argparse.ArgumentParser:
    d = DPOStepConfig()
    p = OneLineParser(prog="train_region_reg_dpo.py",
                                description="Region-Reg-DPO fine-tuning of DiffuEraser on a regdpo dpo_data folder "
                                "(see docs/training.md).")
    g = p.add_argument_group("weights and data")
    g.add_argument("--base_model_name_or_path", required=True, help="Stable Diffusion 1.5 folder (tokenizer/, "
                   "text_encoder/, scheduler/)")
    g.add_argument("--vae_path", required=True, help="sd-vae-ft-mse folder")
    g.add_argument("--diffueraser_path", required=True, help="finished DiffuEraser weights to fine-tune "
                   "(brushnet/, unet_main/); also the reference model")
    g.add_argument("--diffueraser_repo", default=os.environ.get("REGDPO_DIFFUERASER_REPO"),
                   help="DiffuEraser code checkout (default $REGDPO_DIFFUERASER_REPO, else sys.path)")
    g.add_argument("--dpo_data_root", default=None, help="the dpo_data folder (regdpo generate)")
    g.add_argument("--dpo_shards", nargs="+", default=None, help="train on a packed dataset instead (regdpo pack): "
                   "its folder or URL prefix (s3://...), or its shard paths / URLs; the checkpoints carry the "
                   "data position (docs/scale.md)")
    g.add_argument("--manifest", default=None, help="manifest to train on (default ROOT/manifest.json; e.g. "
                   "manifest.selected.json)")
    g.add_argument("--neg_types", default=None, help="comma-separated negative types (default: all)")
    g.add_argument("--exclude_evalset", default=None, metavar="EVALSET", help="leave out every video made from a "
                   "source this eval set (`regdpo evalset`) holds; the run says how many (docs/evaluation.md)")
    g.add_argument("--output_dir", default="diffuEraser-model-dpo")
    g.add_argument("--nframes", type=integer(1, MAX_FRAMES), default=10, help="frames per training clip (default 10)")
    g.add_argument("--resolution", type=integer(8, MAX_SIDE), default=512, help="training crop side, a multiple of 8")
    g.add_argument("--boundary_dilation", type=integer(1, MAX_SIDE), default=7, help="boundary ring kernel (odd; default 7)")
    g.add_argument("--random_flip", action="store_true", help="random horizontal flip (both sides alike)")
    g.add_argument("--dataloader_num_workers", type=integer(0, MAX_WORKERS), default=0)
    g.add_argument("--max_upscale", type=real(1, 100), default=1.25, metavar="X",
                   help="refuse to train at a --resolution that enlarges a stored video more than X times (an "
                   "enlarged GT is a soft winner; the generator's policy and default, 1.25)")
    g.add_argument("--skip_invalid", action="store_true",
                   help="pass over a pair whose files cannot be read (damaged after the dataset was built): "
                   "reported once in one line naming the file, counted in metrics.jsonl (skipped_pairs)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--train_modules", choices=TRAIN_MODULES, default=d.train_modules,
                   help="motion: the motion modules (DiffuEraser's stage 2); spatial: BrushNet and the 2-D UNet "
                   f"(stage 1); both (default {d.train_modules})")
    o.add_argument("--train_batch_size", type=integer(1, MAX_BATCH), default=1, help="pairs per device and micro-batch")
    o.add_argument("--gradient_accumulation_steps", type=integer(1, MAX_STEPS), default=1)
    o.add_argument("--max_train_steps", type=integer(1, MAX_STEPS), default=1000, help="optimizer steps")
    o.add_argument("--learning_rate", type=real(0, 1, lo_open=True), default=1e-6)
    o.add_argument("--lr_scheduler", default="constant", help="diffusers scheduler name (default constant)")
    o.add_argument("--lr_warmup_steps", type=integer(0, MAX_STEPS), default=0)
    o.add_argument("--adam_beta1", type=real(0, 1, hi_open=True), default=0.9)
    o.add_argument("--adam_beta2", type=real(0, 1, hi_open=True), default=0.999)
    o.add_argument("--adam_weight_decay", type=real(0, MAX_WEIGHT), default=1e-2)
    o.add_argument("--adam_epsilon", type=real(0, 1, lo_open=True), default=1e-8)
    o.add_argument("--max_grad_norm", type=real(0, MAX_WEIGHT, lo_open=True), default=1.0)
    o.add_argument("--gradient_checkpointing", action="store_true",
                   help="checkpoint every block of the trained modules (less activation memory, ~1 more forward)")
    o.add_argument("--use_8bit_adam", action="store_true", help="bitsandbytes' AdamW8bit (the [train8bit] extra)")
    o.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls and convolutions on Ampere+ GPUs")
    o.add_argument("--enable_xformers_memory_efficient_attention", action="store_true",
                   help="xformers attention (default: PyTorch's SDPA kernels)")
    o.add_argument("--seed", type=integer(0, MAX_SEED), default=None, help="seed of the model noise and the data order")
    o.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default=None,
                   help="default: accelerate's config (the DPO arithmetic stays fp32 in any case)")
    o.add_argument("--checkpointing_steps", type=integer(1, MAX_STEPS), default=500)
    o.add_argument("--checkpoints_total_limit", type=integer(1, MAX_STEPS), default=None)
    o.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint-N folder or 'latest'")
    o.add_argument("--report_to", choices=REPORT_TO, default="none", help="also log the step diagnostics (and the "
                   "validation) to TensorBoard ({output_dir}/logs) or Weights & Biases (default none)")
    l = p.add_argument_group("loss (regdpo.dpo)")
    l.add_argument("--loss_form", choices=LOSS_FORMS, default=d.loss_form,
                   help=f"logratio: gaps log(mse/mse_ref); diff: Diffusion-DPO's mse - mse_ref (default {d.loss_form})")
    l.add_argument("--beta_dpo", type=real(0, MAX_WEIGHT, lo_open=True), default=None,
                   help="DPO beta (default 10 for logratio, 2500 for diff)")
    l.add_argument("--loser_clip", type=real(-MAX_WEIGHT, MAX_WEIGHT), default=d.loser_clip,
                   help=f"cap of the loser gap (default {d.loser_clip}; a negative value: no cap)")
    l.add_argument("--loser_weight", type=real(0, MAX_WEIGHT), default=d.loser_weight, help=f"weight of the loser gap "
                   f"(default {d.loser_weight})")
    l.add_argument("--sft_weight", type=real(0, MAX_WEIGHT), default=d.sft_weight, help=f"weight of mse_w (default {d.sft_weight})")
    l.add_argument("--anchor_weight", type=real(0, MAX_WEIGHT), default=d.anchor_weight,
                   help=f"weight of relu(winner gap) (default {d.anchor_weight})")
    l.add_argument("--w_hole", type=real(0, MAX_WEIGHT), default=d.w_hole)
    l.add_argument("--w_boundary", type=real(0, MAX_WEIGHT), default=d.w_boundary)
    l.add_argument("--w_context", type=real(0, MAX_WEIGHT), default=d.w_context)
    l.add_argument("--latent_sampling", choices=LATENT_SAMPLING, default=d.latent_sampling,
                   help="shared: one VAE posterior draw for both sides; mean: the posterior mean")
    l.add_argument("--use_pair_weights", action="store_true",
                   help="scale each pair's DPO term by its pair_weight (regdpo select --weights writes it into the "
                   "selected manifest; 1.0 for pairs without one)")
    l.add_argument("--saturation_window", type=integer(1, MAX_STEPS), default=50,
                   help="steps over which implicit_acc_margin >= 0.98 and loser_dominant_ratio >= 0.95 raise the "
                   "saturation warning (default 50)")
    v = p.add_argument_group("validation while training (docs/training.md)")
    v.add_argument("--validation_set", default=None, metavar="EVALSET", help="score the model being trained on "
                   "this eval set (`regdpo evalset`) as `regdpo eval` does, against the reference model")
    v.add_argument("--validation_split", default="dev", help="its split (default dev)")
    v.add_argument("--validation_steps", type=integer(1, MAX_STEPS), default=None,
                   help="every N optimizer steps (default: only after the last step)")
    v.add_argument("--validation_clips", type=integer(1, MAX_STEPS), default=None,
                   help="the split's first K clips only (default all)")
    v.add_argument("--propainter_model_dir", default=None, help="ProPainter weights of validation's prior")
    v.add_argument("--pcm_weights_path", default=None, help="PCM_Weights folder of validation's inference")
    v.add_argument("--propainter_resize_ratio", type=real(0.0, 4.0, lo_open=True), default=0.6,
                   help="validation's ProPainter working ratio (default 0.6, as regdpo eval)")
    v.add_argument("--propainter_raft_iter", type=integer(1, 1000), default=20,
                   help="validation's RAFT iterations (default 20)")
    return p


def step_config(args: argparse.Namespace) -> DPOStepConfig:
    beta = args.beta_dpo if args.beta_dpo is not None else (10.0 if args.loss_form == "logratio" else 2500.0)
    clip = None if args.loser_clip is None or args.loser_clip < 0 else args.loser_clip
    return DPOStepConfig(train_modules=args.train_modules, loss_form=args.loss_form, beta_dpo=beta, loser_clip=clip,
                         loser_weight=args.loser_weight, sft_weight=args.sft_weight, anchor_weight=args.anchor_weight,
                         w_hole=args.w_hole, w_boundary=args.w_boundary, w_context=args.w_context,
                         latent_sampling=args.latent_sampling, use_pair_weights=args.use_pair_weights)


def check_args(args: argparse.Namespace) -> DPOStepConfig:
    from .weights import weight_problems

    problems = step_config(args).problems()
    problems += weight_problems(args.base_model_name_or_path, args.vae_path, args.diffueraser_path)
    for name, minimum in (("nframes", 1), ("train_batch_size", 1), ("gradient_accumulation_steps", 1),
                          ("max_train_steps", 1), ("checkpointing_steps", 1), ("saturation_window", 1),
                          ("dataloader_num_workers", 0)):
        if getattr(args, name) < minimum:
            problems.append(f"--{name} {getattr(args, name)}: must be >= {minimum}")
    if args.resolution < 8 or args.resolution % 8:
        problems.append(f"--resolution {args.resolution}: must be a multiple of 8")
    if args.boundary_dilation % 2 == 0:
        problems.append(f"--boundary_dilation {args.boundary_dilation}: must be odd (a centred square kernel)")
    if args.dpo_shards is None and args.dpo_data_root is None:
        problems.append("--dpo_data_root or --dpo_shards is required")
    elif args.dpo_shards is None and not Path(args.dpo_data_root).is_dir():
        problems.append(f"--dpo_data_root {args.dpo_data_root}: folder not found")
    if args.dpo_shards and (args.manifest or args.exclude_evalset):
        problems.append("--dpo_shards: --manifest / --exclude_evalset select from a folder; pack that selection "
                        "(regdpo pack ROOT OUT --manifest ...) instead")
    if args.exclude_evalset and not (Path(args.exclude_evalset) / "evalset.json").is_file():
        problems.append(f"--exclude_evalset {args.exclude_evalset}: no evalset.json there (make one with "
                        "`regdpo evalset`)")
    if not args.learning_rate > 0:
        problems.append(f"--learning_rate {args.learning_rate}: must be > 0")
    problems += optional_package_problems(args.use_8bit_adam, args.enable_xformers_memory_efficient_attention)
    from .tracking import report_to_problem
    from .validation import flag_problems

    if report_to_problem(args.report_to):
        problems.append(report_to_problem(args.report_to))
    problems += flag_problems(args)
    if problems:  # one line, every problem named
        raise UsageError("; ".join(problems))
    return step_config(args)


def saturated(history: Sequence[dict[str, float]], window: int, acc: float = 0.98, dominant: float = 0.95) -> bool:
    """Whether each of the last ``window`` steps had ``implicit_acc_margin >= acc`` and
    ``loser_dominant_ratio >= dominant``: the policy wins every pair, by a margin above float noise
    (``regdpo.dpo.ACC_MARGIN``), by making the loser worse: saturation without learning."""
    if window < 1 or len(history) < window:
        return False
    return all(h["implicit_acc_margin"] >= acc and h["loser_dominant_ratio"] >= dominant for h in history[-window:])


def checkpoint_step(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        raise UsageError(f"--resume_from_checkpoint {path}: not a checkpoint-N folder") from None


def find_checkpoint(output_dir: Path, spec: str) -> Path | None:
    if spec != "latest":
        path = Path(spec)
        if not path.is_absolute() and not path.exists():
            path = output_dir / spec
        if not path.is_dir():
            raise UsageError(f"--resume_from_checkpoint {spec}: folder not found")
        checkpoint_step(path)
        return path
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return max(found, key=checkpoint_step) if found else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fresh = not os.path.lexists(args.output_dir)  # made by this run: removed again if it stops with it empty
    try:
        return train(args)
    except RegdpoError as exc:  # one line, whatever the message holds (a DataLoader worker's traceback too)
        from .skips import close_progress_bars, one_line_error

        close_progress_bars()  # the error on a line of its own, not after the bar's text
        print(f"train_region_reg_dpo.py: error: {one_line_error(exc)}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:  # the file system refused (read-only, no permission): a data error naming the path
        if not exc.filename:
            raise
        print(f"train_region_reg_dpo.py: error: {os_error_line(exc)}", file=sys.stderr)
        return DATA_EXIT
    finally:
        if fresh:
            try:
                os.rmdir(args.output_dir)  # only when empty: a run that stopped before writing leaves nothing
            except OSError:
                pass


def train(args: argparse.Namespace) -> int:
    config = check_args(args)
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from ..backends.models_source import import_source
    from ..dataset import DPODataset, collate_fn
    from ..dpo import diagnostics_to_floats
    from . import shard_data, tracking
    from .modes import enable_gradient_checkpointing
    from .optim import allow_tf32, attention_processors, optimizer_class, use_xformers
    from .skips import SkippedPairs
    from .step import DiffuEraserDPOStep
    from .weights import load_modules, save_diffueraser_weights

    output_dir = Path(args.output_dir)
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision=args.mixed_precision, log_with=tracking.log_with(args.report_to),
                              project_config=ProjectConfiguration(project_dir=str(output_dir),
                                                                  logging_dir=str(tracking.logging_dir(output_dir))))
    if args.seed is not None:
        set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    source = import_source(args.diffueraser_repo)
    m = load_modules(source, base_model_path=args.base_model_name_or_path, vae_path=args.vae_path,
                     diffueraser_path=args.diffueraser_path)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    step = DiffuEraserDPOStep(vae=m.vae, text_encoder=m.text_encoder, brushnet=m.brushnet, unet_main=m.unet_main,
                              noise_scheduler=m.noise_scheduler, config=config, weight_dtype=weight_dtype,
                              unwrap=accelerator.unwrap_model)
    if args.gradient_checkpointing:  # takes effect: the step put the trained modules in train mode
        enable_gradient_checkpointing(m.unet_main, m.brushnet, config.train_modules)
    if args.enable_xformers_memory_efficient_attention:
        use_xformers(m.unet_main, m.brushnet)
    if args.allow_tf32:
        allow_tf32()
    accelerator.print("attention: " + ", ".join(f"{n} x{k}" for n, k in
                                                attention_processors(m.unet_main, m.brushnet).items()))
    device = accelerator.device
    m.vae.to(device, dtype=weight_dtype)
    m.text_encoder.to(device, dtype=weight_dtype)
    step.reference.to(device)
    trained = {"unet_main": m.unet_main, "brushnet": m.brushnet}
    if not step.reference.covers("brushnet"):  # frozen: inference only
        m.brushnet.to(device, dtype=weight_dtype)
        del trained["brushnet"]
    optimizer = optimizer_class(args.use_8bit_adam)(step.trainable, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    data_args = argparse.Namespace(dpo_data_root=args.dpo_data_root, manifest=args.manifest, nframes=args.nframes,
                                   resolution=args.resolution, boundary_dilation=args.boundary_dilation,
                                   neg_types=args.neg_types, random_flip=args.random_flip,
                                   skip_invalid=args.skip_invalid, max_upscale=args.max_upscale,
                                   dataset_seed=args.seed if args.seed is not None else 0,
                                   dpo_shards=args.dpo_shards[0] if args.dpo_shards and len(args.dpo_shards) == 1
                                   else args.dpo_shards)
    if args.exclude_evalset:
        data_args.manifest = manifest_excluding_evalset(args, accelerator, output_dir)
    dataset = DPODataset(data_args, m.tokenizer)
    loader_gen = torch.Generator().manual_seed(args.seed if args.seed is not None else 0)
    if args.dpo_shards:  # the reader splits by rank itself: its loader is not prepared
        loader = shard_data.shard_loader(dataset, args, collate_fn, accelerator)
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=True,
                                             collate_fn=collate_fn, num_workers=args.dataloader_num_workers,
                                             generator=loader_gen)
    if len(loader) == 0:
        raise UsageError(f"--train_batch_size {args.train_batch_size}: more than the {len(dataset)} pairs of "
                         f"{args.dpo_shards or args.dpo_data_root}")
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    names = list(trained)
    prepared = accelerator.prepare(*trained.values(), optimizer, *([] if args.dpo_shards else [loader]), lr_scheduler)
    wrapped = dict(zip(names, prepared[:len(names)]))
    optimizer, *prepared_loader, lr_scheduler = prepared[len(names):]
    loader = prepared_loader[0] if prepared_loader else loader
    step.policy_unet = wrapped["unet_main"]
    step.policy_brushnet = wrapped.get("brushnet", m.brushnet)
    accumulate_over = list(wrapped.values())

    updates_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    global_step, first_epoch, skip = 0, 0, 0
    if args.resume_from_checkpoint:
        path = find_checkpoint(output_dir, args.resume_from_checkpoint)
        if path is None:
            accelerator.print(f"no checkpoint in {output_dir}: starting a new run")
        else:
            accelerator.print(f"resuming from {path}")
            accelerator.load_state(str(path), map_location="cpu")
            global_step = checkpoint_step(path)
            first_epoch = global_step // updates_per_epoch
            skip = (global_step % updates_per_epoch) * args.gradient_accumulation_steps
            if args.dpo_shards:  # the data position came back with the checkpoint
                first_epoch, skip = dataset.epoch, 0
    if accelerator.is_main_process:
        (output_dir / "training_args.json").write_text(json.dumps(
            {**vars(args), "step_config": config.to_dict()}, indent=2, sort_keys=True, default=str))
        if args.report_to != "none":
            accelerator.init_trackers(tracking.TRACKER_PROJECT, config=tracking.tracker_config(vars(args)))
    metrics_path = output_dir / METRICS_FILE
    skips = SkippedPairs()
    validation = None
    if args.validation_set and accelerator.is_main_process:
        from .validation import TrainingValidation

        def write_line(record: dict) -> None:
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

        validation = TrainingValidation(args, device, write_line, accelerator.log,
                                        lambda line: tqdm.write(line, file=sys.stderr))
        validation.start(global_step)
    history: list[dict[str, float]] = []
    warned = False
    bar = tqdm(total=args.max_train_steps, initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process)
    generator = torch.Generator(device=device).manual_seed(
        (args.seed if args.seed is not None else 0) * 1000003 + global_step + accelerator.process_index)
    sums: dict[str, torch.Tensor] = {}
    micro = 0
    started = time.perf_counter()
    epoch = first_epoch
    while global_step < args.max_train_steps:
        dataset.set_epoch(epoch)
        loader_gen.manual_seed((args.seed if args.seed is not None else 0) + epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        skip = 0
        for batch in batches:
            for line in skips.add(batch):  # (--skip_invalid) each damaged pair once, one line naming the file
                bar.write(f"train_region_reg_dpo.py: warning: {line}", file=sys.stderr)
            if args.dpo_shards:
                dataset.advance(batch)
            with accelerator.accumulate(*accumulate_over):
                loss, diag = step(batch, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(step.trainable, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            for k in LOGGED:
                sums[k] = sums.get(k, 0) + diag[k].detach().float()
            micro += 1
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            means = torch.stack([sums[k] / micro for k in LOGGED])
            means = accelerator.reduce(means, reduction="mean") if accelerator.num_processes > 1 else means
            record = dict(zip(LOGGED, diagnostics_to_floats(dict(zip(LOGGED, means))).values()))
            sums, micro = {}, 0
            now = time.perf_counter()
            record = {"step": global_step, **record, "lr": lr_scheduler.get_last_lr()[0],
                      "seconds": now - started}
            started = now
            history.append(record)
            is_saturated = saturated(history, args.saturation_window)
            record["saturated"] = is_saturated
            if args.skip_invalid:
                record["skipped_pairs"] = len(skips)
            if args.dpo_shards:  # the data position (every rank's, a collective) and the damaged pairs skipped
                if global_step % args.checkpointing_steps == 0:
                    shard_data.gather_positions(accelerator, dataset)
                record.update(shard_data.metrics(accelerator, dataset))
            if accelerator.is_main_process:
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                if args.report_to != "none":
                    accelerator.log(tracking.scalars(record, "train/"), step=global_step)
                if is_saturated and not warned:
                    bar.write(f"WARNING: step {global_step}: implicit_acc_margin >= 0.98 and loser_dominant_ratio >= 0.95 "
                              f"for {args.saturation_window} steps: the loss is saturated by losers getting worse, "
                              "not by learning (harder negatives, a smaller --beta_dpo, --loser_clip, or stop; "
                              "see docs/training.md)")
                warned = is_saturated
                if global_step % args.checkpointing_steps == 0:
                    save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit,
                                    models=names, train_modules=config.train_modules)
                if validation is not None:
                    validation.after_step(global_step, accelerator.unwrap_model(m.unet_main),
                                          accelerator.unwrap_model(m.brushnet))
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['implicit_acc']:.2f}",
                            ldr=f"{record['loser_dominant_ratio']:.2f}", lr=f"{record['lr']:.2e}")
            if global_step >= args.max_train_steps:
                break
        epoch += 1
    bar.close()
    if args.skip_invalid:
        accelerator.print(f"skipped {len(skips)} unreadable pair(s) (--skip_invalid: each named above; "
                          f"metrics.jsonl 'skipped_pairs')")
    if validation is not None:
        validation.finish(global_step, accelerator.unwrap_model(m.unet_main), accelerator.unwrap_model(m.brushnet))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        saved = save_diffueraser_weights(output_dir, accelerator.unwrap_model(m.unet_main),
                                         accelerator.unwrap_model(m.brushnet), source_path=args.diffueraser_path,
                                         untouched=tuple(k for k in ("brushnet",) if not step.reference.covers(k)))
        accelerator.print(f"saved {saved['unet_main']} and {saved['brushnet']}")
    accelerator.end_training()
    return 0


def manifest_excluding_evalset(args: argparse.Namespace, accelerator: Any, output_dir: Path) -> str:
    """``--exclude_evalset``: the training manifest without the videos made from an eval-set source, written by
    the main process to ``{output_dir}/manifest.train.json`` (what the run trains on); its path."""
    from ..evaluation.exclude import evalset_source_keys, manifest_without_sources
    from ..format import write_json_atomic

    path = output_dir / "manifest.train.json"
    if accelerator.is_main_process:
        manifest, excluded, unknown = manifest_without_sources(
            args.dpo_data_root, args.manifest, evalset_source_keys(args.exclude_evalset))
        write_json_atomic(path, manifest.to_dict())
        accelerator.print(f"--exclude_evalset {args.exclude_evalset}: excluded {len(excluded)} video(s) made from "
                          f"a source the eval set holds, {len(manifest.videos)} kept"
                          + (f" ({len(unknown)} record no source)" if unknown else "") + f"; training on {path}")
    accelerator.wait_for_everyone()
    return str(path)


def save_checkpoint(accelerator: Any, output_dir: Path, step: int, limit: int | None,
                    models: list[str] | None = None, train_modules: str | None = None) -> Path:
    """``accelerator.save_state`` into ``checkpoint-{step}`` (written under a temporary name, then
    renamed, so a killed run never leaves a half checkpoint); keeps the newest ``limit``. ``models``:
    the prepared modules' names in order, recorded for ``regdpo export`` (``export.CHECKPOINT_INFO``)."""
    final = output_dir / f"checkpoint-{step}"
    partial = output_dir / f".checkpoint-{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    accelerator.save_state(str(partial))
    if models is not None:
        from .export import write_checkpoint_info

        write_checkpoint_info(partial, models, str(train_modules))
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    if limit is not None and limit > 0:
        done = sorted((p for p in output_dir.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()),
                      key=checkpoint_step)
        for old in done[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final
