"""``ref_margin``: how far the reference model already separates each pair (``regdpo score``).

For a pair, the reference model's region-weighted denoising MSE (the same MSE the DPO loss
uses, ``DiffuEraserDPOStep``) on the loser minus that on the winner, averaged over
``num_timesteps`` fixed timesteps ``t_k = floor((k + 1/2) * T / K)`` and ``num_noises`` noise
draws. Noise draw ``n`` comes from a generator seeded with ``derive_seed(seed, "score", n)``,
the same for every pair and timestep, so margins are comparable between pairs and do not
depend on the order or the subset scored. A large positive margin: the reference already
denoises the winner much better than the loser, and the pair teaches little; near 0 or
negative: the pair is hard.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..seeding import derive_seed


def score_timesteps(num_timesteps: int, num_train_timesteps: int = 1000) -> list[int]:
    """``K`` evenly spaced timesteps, the centres of ``K`` equal bins of ``[0, T)``."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    return [int((k + 0.5) * num_train_timesteps / num_timesteps) for k in range(num_timesteps)]


def noise_seeds(seed: int, num_noises: int) -> list[int]:
    return [derive_seed(seed, "score", n) for n in range(num_noises)]


def stream_of(item: dict[str, Any]) -> tuple[str, float]:
    """``(stream, strength)`` of a dataset item: its ``stream`` when given, else the stream folder of
    its ``(neg_type, neg_strength)`` (``regdpo.format.stream_name``: ``blur`` at 1.0, ``blur_s0.50``)."""
    from .. import format as fmt

    strength = float(item.get("neg_strength", 1.0))
    stream = item.get("stream") or fmt.stream_name(str(item["neg_type"]), strength)
    return str(stream), strength


def pair_margin(step: Any, batch: dict[str, Any], timesteps: Sequence[int], seeds: Iterable[int]) -> list[float]:
    """``ref_margin`` of every pair of ``batch`` (a list, one per pair), with ``step``'s model."""
    import torch

    seeds = list(seeds)
    total = None
    b = batch["pixel_values_pos"].shape[0]
    with torch.no_grad():
        for seed in seeds:
            for t in timesteps:
                generator = torch.Generator(device=step.device).manual_seed(int(seed))
                x = step.inputs(batch, generator, timesteps=torch.full((b,), int(t), dtype=torch.long))
                mse_w, mse_l = step.reference_mse(x)
                gap = (mse_l - mse_w).double().cpu()
                total = gap if total is None else total + gap
    assert total is not None
    return (total / (len(seeds) * len(timesteps))).tolist()
