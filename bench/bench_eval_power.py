"""How many eval clips a 0.2 dB hole-PSNR difference needs to be told from noise, from the real fixtures.

Builds ``--seeds`` eval sets of the DAVIS / YouTube-VOS fixtures (ProPainter's protocol: 432x240, 24 frames,
stationary masks; each seed draws other clip starts and masks) and runs a seeded classical fill (``--fill``,
default ``hallucination``: its texture source is drawn from the seed) twice on each clip, with inference seeds 0
and 1. The per-clip hole-PSNR deltas between the two runs are pure seed noise: what two equally good models
differ by. Then, for each number of clips n, it draws n deltas from that noise shifted to a true mean of
``--effect`` dB, runs regdpo eval's paired bootstrap verdict (``regdpo.evaluation.stats.compare``) ``--trials``
times and prints the share called ``better`` (the power), and the smallest n reaching 80 %.

    python bench/bench_eval_power.py                       # fixtures at ../shared/data
    python bench/bench_eval_power.py --data /path/to/data --seeds 8 --effect 0.2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import MachineLoad  # noqa: E402

from regdpo.evaluation.evalset import load_evalset  # noqa: E402
from regdpo.evaluation.evalset_build import Protocol, build_evalset  # noqa: E402
from regdpo.evaluation.metrics import PIXEL_SPECS, MetricSpec  # noqa: E402
from regdpo.evaluation.models import classical_model  # noqa: E402
from regdpo.evaluation.runner import EvalRunner  # noqa: E402
from regdpo.evaluation.stats import compare  # noqa: E402
from regdpo.generate.sources import discover_sources  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pooled_deltas(data: Path, seeds: int, fill: str, work: Path) -> np.ndarray:
    sources = discover_sources(davis_root=data / "DAVIS", ytvos_root=data / "YTBV")
    deltas = []
    for seed in range(seeds):
        out = work / f"set{seed}"
        build_evalset(out, sources, [("test", 3)], Protocol(seed=seed))
        evalset = load_evalset(out)
        clips = evalset.split("test")
        runs = [EvalRunner(evalset, clips, [classical_model("fill", fill)], work / f"eval{seed}-{k}", seed=k,
                           progress=False, log=lambda s: None).run() for k in (0, 1)]
        for clip in clips:
            a, b = (r[("fill", clip.name)].values["hole_psnr"] for r in runs)
            deltas.append(b - a)
    return np.asarray(deltas)


def power(centred: np.ndarray, effect: float, n: int, trials: int, spec: MetricSpec, rng: np.random.Generator,
          resamples: int) -> float:
    called = 0
    names = [str(i) for i in range(n)]
    for _ in range(trials):
        sample = rng.choice(centred, size=n, replace=True) + effect
        verdict = compare(spec, [0.0] * n, list(sample), names, resamples=resamples,
                          seed=int(rng.integers(2**31)))["verdict"]
        called += verdict == "better"
    return called / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--fill", default="hallucination", help="a seeded classical fill")
    parser.add_argument("--effect", type=float, default=0.2, help="true mean hole-PSNR difference, dB")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per trial")
    args = parser.parse_args()
    if not (args.data / "DAVIS").is_dir():
        sys.exit(f"fixtures not found at {args.data} (give --data)")
    spec = next(s for s in PIXEL_SPECS if s.name == "hole_psnr")
    with MachineLoad() as load, tempfile.TemporaryDirectory() as tmp:
        deltas = pooled_deltas(args.data, args.seeds, args.fill, Path(tmp))
        sd = float(deltas.std(ddof=1))
        print(f"{len(deltas)} per-clip hole-PSNR deltas ({args.fill}, inference seed 1 - seed 0; {args.seeds} eval "
              f"sets x 3 fixture clips, 432x240x24, stationary masks): mean {deltas.mean():+.3f} dB, sd {sd:.3f} dB")
        rng = np.random.default_rng(0)
        centred = deltas - deltas.mean()
        enough = None
        print(f"true difference {args.effect:+.2f} dB; power = share of {args.trials} trials the paired bootstrap "
              f"({args.resamples} resamples) calls 'better'")
        print(f"{'clips':>6} {'power':>6} {'95% CI half-width (1.96 sd / sqrt n)':>38}")
        for n in (5, 10, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400):
            p = power(centred, args.effect, n, args.trials, spec, rng, args.resamples)
            print(f"{n:6d} {p:6.2f} {1.96 * sd / np.sqrt(n):38.3f}")
            if p >= 0.8 and enough is None:
                enough = n
        normal = ((1.96 + 0.84) * sd / args.effect) ** 2
        print(f"smallest n with power >= 0.80: {enough if enough else '> 400'}; normal approximation "
              f"(1.96 + 0.84)^2 sd^2 / effect^2 = {normal:.0f} clips")
    print(load.summary())


if __name__ == "__main__":
    main()
