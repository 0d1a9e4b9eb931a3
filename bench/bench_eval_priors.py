"""What the ProPainter prior cache saves in ``regdpo eval --backend models``: M models x N clips, once with
``--no_prior_cache`` (every model runs ProPainter on every clip: M x N runs, M loads) and once with the cache
(N runs, one load), in one process on the same machine; then the cached run resumed with every result removed
(the priors come from ``DIR/priors``: no ProPainter at all). It checks that the three give the same bytes and
prints the seconds, the ratio, the priors computed / reused and the machine's load.

By default it builds tiny random weights with the real DiffuEraser / ProPainter classes
(``regdpo.backends.models_tiny``; ProPainter's networks have their real sizes, DiffuEraser is tiny) and runs on
the CPU, so ProPainter's share of the time is far larger than with the real DiffuEraser on a GPU: the figure
shows the mechanism and the work removed ((M - 1) x N ProPainter runs and M - 1 loads), not a GPU speed-up.

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser python bench/bench_eval_priors.py
    python bench/bench_eval_priors.py --models 2 --clips 3 --frames 4 --size 128 --raft_iter 20
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import MachineLoad  # noqa: E402


def build(work: Path, args: argparse.Namespace) -> tuple[dict[str, str], list[str], Path]:
    """Tiny weights (``--models`` DiffuEraser folders with their own seeds, one ProPainter) and an eval set."""
    from regdpo.audit.synthetic import textured_clip
    from regdpo.backends.models_source import import_source
    from regdpo.backends.models_tiny import build_tiny_weights
    from regdpo.cli import main
    from regdpo.frames import write_rgb

    source = import_source(args.diffueraser_repo)
    paths = build_tiny_weights(work / "w0", source)
    models = [paths["diffueraser_path"]] + [build_tiny_weights(work / f"w{k}", source, seed=k)["diffueraser_path"]
                                           for k in range(1, args.models)]
    videos = work / "videos"
    for k in range(args.clips):
        (videos / f"v{k}").mkdir(parents=True)
        for i, frame in enumerate(textured_clip(args.frames + 2, args.size, args.size + 16, seed=k + 1)):
            write_rgb(videos / f"v{k}" / f"{i:05d}.png", frame)
    evalset = work / "evalset"
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["evalset", str(evalset), "--video_root", str(videos), "--split", f"test:{args.clips}",
                     "--nframes", str(args.frames), "--height", str(args.size), "--width", str(args.size),
                     "--no_progress"]) == 0
    return paths, models, evalset


def run_eval(evalset: Path, out: Path, paths: dict[str, str], models: list[str], args: argparse.Namespace,
             cache: bool) -> tuple[float, str]:
    """(seconds, the priors line of the log or "") of one ``regdpo eval`` call."""
    from regdpo.cli import main

    flags = [x for k, m in enumerate(models) for x in ("--model", f"m{k}={m}")]
    cmd = ["eval", str(evalset), "--backend", "models", *flags, "--output_dir", str(out), "--no_progress",
           "--no_html", "--save_frames", "--base_model_path", paths["base_model_path"], "--vae_path",
           paths["vae_path"], "--propainter_model_dir", paths["propainter_model_dir"], "--pcm_weights_path",
           paths["pcm_weights_path"], "--device", "cpu", "--diffueraser_nframes", str(args.frames),
           "--propainter_resize_ratio", "1.0", "--propainter_raft_iter", str(args.raft_iter),
           *(["--diffueraser_repo", args.diffueraser_repo] if args.diffueraser_repo else []),
           *([] if cache else ["--no_prior_cache"])]
    err = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(cmd)
    seconds = time.perf_counter() - started
    if rc != 0:
        sys.exit(f"regdpo eval failed ({rc}):\n{err.getvalue()[-3000:]}")
    line = next((s for s in err.getvalue().splitlines() if "ProPainter priors:" in s), "")
    return seconds, re.sub(r"\(/\S+\)", "(DIR/priors)", line.removeprefix("regdpo eval: "))


def results(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != "priors"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="clip height and width (RAFT needs >= 128)")
    parser.add_argument("--raft_iter", type=int, default=20, help="ProPainter's RAFT iterations (its default: 20)")
    parser.add_argument("--diffueraser_repo", default=os.environ.get("REGDPO_DIFFUERASER_REPO"))
    args = parser.parse_args()
    if args.models < 2 or args.clips < 1 or args.frames < 2:
        sys.exit("give --models >= 2, --clips >= 1, --frames >= 2")
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths, models, evalset = build(work, args)
        with MachineLoad() as load:
            plain, _ = run_eval(evalset, work / "plain", paths, models, args, cache=False)
            cached, line = run_eval(evalset, work / "cached", paths, models, args, cache=True)
            kept = results(work / "cached")
            shutil.rmtree(work / "cached" / "units")
            shutil.rmtree(work / "cached" / "frames")
            resumed, line2 = run_eval(evalset, work / "cached", paths, models, args, cache=True)
        same = results(work / "plain") == kept == results(work / "cached")
    print(f"regdpo eval --backend models, {args.models} models x {args.clips} clips of {args.frames} x {args.size} x "
          f"{args.size}, tiny DiffuEraser weights, real-size ProPainter (RAFT {args.raft_iter} iterations), CPU, "
          f"{torch.get_num_threads()} threads")
    print(f"  --no_prior_cache: {plain:.1f} s ({args.models * args.clips} ProPainter runs, {args.models} loads)")
    print(f"  prior cache:      {cached:.1f} s; {line}")
    print(f"  resumed, results removed, priors on disk: {resumed:.1f} s; {line2}")
    print(f"  saved by the cache: {plain - cached:.1f} s of {plain:.1f} s; ratio no cache / cache = "
          f"{plain / cached:.2f}x")
    print(f"  results byte-identical (units, frames, eval.json): {same}")
    print(f"  {load.summary()}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
