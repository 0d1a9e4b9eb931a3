"""One Region-Reg-DPO step on DiffuEraser's modules, from a ``DPODataset`` batch.

``DiffuEraserDPOStep(...)(batch, generator)`` returns ``(loss, diagnostics)``. It follows
DiffuEraser's stage-2 training step (VAE latents scaled by ``scaling_factor``, BrushNet on the
noisy latents and the 5-channel condition, the motion UNet with BrushNet's residuals, epsilon
or v-prediction target) and adds what DPO needs, each a silent bug when missed:

1. winner and loser go through one doubled batch ``[2B * F]`` (winners first); BrushNet gets
   per-frame timesteps ``[2B * F]`` (it expands them to the batch and fails on ``[2B]``),
   the motion UNet per-video timesteps ``[2B]``;
2. one VAE posterior noise draw is shared by winner and loser (``latent_sampling="shared"``:
   ``mean + std * eps`` with the same ``eps``), or the posterior mean (``"mean"``);
3. one diffusion noise and one timestep per pair, shared by both sides;
4. the motion UNet pops BrushNet's residual lists: every call gets fresh lists, so the
   reference pass can reuse BrushNet's outputs when BrushNet is frozen;
5. the condition's mask channel is DiffuEraser's: the batch's ``masks_latent`` (``masks``, 1 = valid,
   interpolated with nearest to the latent size), not the region masks' any-hole rule;
6. the MSEs and the DPO arithmetic are float32 (``regdpo.dpo``), whatever the autocast dtype;
7. the MSEs are region-weighted (hole / boundary ring / context, ``mask_*_latent``), divided by
   the weight sum, one value per video.

The reference is the policy with the trained parameters swapped for their frozen copies
(``modules.ReferenceWeights``), computed without gradient and in eval mode. The modules holding
trained parameters are in train mode (so ``enable_gradient_checkpointing()`` takes effect), the
frozen ones in eval mode (``modes``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..dpo import dpo_loss, region_mse, region_weights
from .config import DPOStepConfig
from .modes import eval_mode, set_modes
from .modules import ReferenceWeights, set_trainable

__all__ = ["DiffuEraserDPOStep", "StepInputs", "mask_channel"]


def mask_channel(batch: dict[str, Any]) -> torch.Tensor:
    """The condition's mask channel ``[B * F, 1, h, w]`` (1 = valid): the batch's ``masks_latent``,
    which ``DPODataset`` computes exactly as DiffuEraser's training does (``masks`` interpolated,
    nearest, to the latent size)."""
    if "masks_latent" not in batch:
        raise KeyError("the batch has no 'masks_latent' (the condition's mask channel): use regdpo's DPODataset")
    lat = batch["masks_latent"]
    return lat.reshape(-1, 1, *lat.shape[-2:])


@dataclass
class StepInputs:
    """Everything both sides share, built once per step (``[2B * F, ...]``: winners, then losers)."""

    noisy: torch.Tensor          # [2BF, 4, h, w]
    target: torch.Tensor         # [2BF, 4, h, w] (float32)
    condition: torch.Tensor      # [2BF, 5, h, w]
    timesteps: torch.Tensor      # [2B]
    text: torch.Tensor           # [2B, 77, d]
    weights: torch.Tensor        # [B, F, 1, h, w] region weights (float32)
    batch_size: int
    num_frames: int
    pair_weights: torch.Tensor | None = None  # [B] (float32), with ``use_pair_weights``; else None


class DiffuEraserDPOStep:
    """Region-Reg-DPO on DiffuEraser's modules (see the module doc).

    ``vae``, ``text_encoder``: frozen, in ``weight_dtype``; ``brushnet`` (``BrushNetModel``),
    ``unet_main`` (``UNetMotionModel``): the policy; ``noise_scheduler``: a ``DDPMScheduler``
    of the base model. The constructor freezes everything but ``config.train_modules`` and
    copies those parameters as the reference; it puts the modules holding trained parameters in train
    mode and the others in eval mode (``modes.set_modes``). ``policy_brushnet`` / ``policy_unet`` may be
    replaced later by wrapped modules (``accelerate`` / DDP) with ``unwrap`` returning the
    module underneath (the reference pass runs on it).
    """

    def __init__(self, *, vae: Any, text_encoder: Any, brushnet: torch.nn.Module, unet_main: torch.nn.Module,
                 noise_scheduler: Any, config: DPOStepConfig, weight_dtype: torch.dtype = torch.float32,
                 unwrap: Callable[[Any], Any] | None = None):
        self.config = config.check()
        self.vae, self.text_encoder, self.noise_scheduler = vae, text_encoder, noise_scheduler
        self.policy_brushnet, self.policy_unet = brushnet, unet_main
        self.weight_dtype = weight_dtype
        self.unwrap = unwrap or (lambda m: m)
        self.trainable = set_trainable(unet_main, brushnet, config.train_modules)
        self.reference = ReferenceWeights.copy_of(unet_main, brushnet, config.train_modules)
        trained = [unet_main] + ([brushnet] if self.reference.covers("brushnet") else [])
        set_modes(trained, [m for m in (vae, text_encoder, brushnet) if all(m is not t for t in trained)])
        self.scaling_factor = float(vae.config.scaling_factor)
        self.num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)

    # ------------------------------------------------------------------ inputs
    @property
    def device(self) -> torch.device:
        return next(self.unwrap(self.policy_unet).parameters()).device

    def _autocast(self):
        if self.weight_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.weight_dtype)

    def _latents(self, pixels: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        dist = self.vae.encode(pixels.to(self.device, self.weight_dtype)).latent_dist
        latents = dist.mean if eps is None else dist.mean + dist.std * eps.to(dist.mean.dtype)
        return latents * self.scaling_factor

    def _randn(self, shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor(shape, generator=generator, device=self.device, dtype=dtype)

    @torch.no_grad()
    def inputs(self, batch: dict[str, Any], generator: torch.Generator | None = None,
               timesteps: torch.Tensor | None = None) -> StepInputs:
        """Latents, shared noise and timesteps, condition and text of a batch (no gradient).

        Random draws, in order, from ``generator`` (``None``: torch's global generator): the
        posterior noise (``[B*F, 4, h, w]``, shared), the condition's posterior noise, the
        diffusion noise (shared), the timesteps ``[B]`` (shared; unless ``timesteps`` is given).
        """
        pos, neg = batch["pixel_values_pos"], batch["pixel_values_neg"]
        b, f = pos.shape[:2]
        flat = lambda x: x.reshape(b * f, *x.shape[2:])  # noqa: E731
        shape = (b * f, int(self.vae.config.latent_channels), pos.shape[-2] // 8, pos.shape[-1] // 8)
        sampled = self.config.latent_sampling == "shared"
        eps = self._randn(shape, generator, torch.float32) if sampled else None
        lat_w = self._latents(flat(pos), eps)
        lat_l = self._latents(flat(neg), eps)
        cond_eps = self._randn(shape, generator, torch.float32) if sampled else None
        cond = self._latents(flat(batch["conditioning_pos"]), cond_eps)
        mask = mask_channel(batch).to(self.device, cond.dtype)
        condition = torch.cat([cond, mask], dim=1).repeat(2, 1, 1, 1)

        noise = self._randn(tuple(lat_w.shape), generator, lat_w.dtype)
        if timesteps is None:
            timesteps = torch.randint(0, self.num_train_timesteps, (b,), generator=generator,
                                      device=generator.device if generator is not None else "cpu")
        t = timesteps.to(self.device).long().reshape(b)
        t2 = torch.cat([t, t])
        t_frames = t2.repeat_interleave(f)
        latents = torch.cat([lat_w, lat_l])
        noise2 = torch.cat([noise, noise])
        noisy = self.noise_scheduler.add_noise(latents, noise2, t_frames)
        prediction = self.noise_scheduler.config.prediction_type
        if prediction == "epsilon":
            target = noise2
        elif prediction == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise2, t_frames)
        else:
            raise ValueError(f"unknown prediction type {prediction!r}")
        text = self.text_encoder(batch["input_ids"].to(self.device), return_dict=False)[0]
        c = self.config
        weights = region_weights(batch["mask_hole_latent"], batch["mask_boundary_latent"],
                                 batch["mask_context_latent"], c.w_hole, c.w_boundary, c.w_context)
        pair_weights = None
        if c.use_pair_weights:
            pair_weights = torch.as_tensor([float(w) for w in batch.get("pair_weight", [1.0] * b)],
                                           dtype=torch.float32, device=self.device).reshape(b)
        return StepInputs(noisy=noisy, target=target.float(), condition=condition, timesteps=t2,
                          text=torch.cat([text, text]), weights=weights.to(self.device), batch_size=b, num_frames=f,
                          pair_weights=pair_weights)

    # ------------------------------------------------------------------ forward passes
    def _brushnet(self, x: StepInputs, module: Any, reference: bool):
        kwargs = dict(encoder_hidden_states=x.text.repeat_interleave(x.num_frames, dim=0),
                      brushnet_cond=x.condition, return_dict=False)
        t_frames = x.timesteps.repeat_interleave(x.num_frames)  # BrushNet: one timestep per frame
        if reference:
            return self.reference.call("brushnet", module, x.noisy, t_frames, **kwargs)
        return module(x.noisy, t_frames, **kwargs)

    def _unet(self, x: StepInputs, module: Any, residuals: tuple, reference: bool) -> torch.Tensor:
        down, mid, up = residuals
        kwargs = dict(
            encoder_hidden_states=x.text,
            # fresh lists on every call: UNetMotionModel pops from them
            down_block_add_samples=[s.to(self.weight_dtype) for s in down],
            mid_block_add_sample=mid.to(self.weight_dtype),
            up_block_add_samples=[s.to(self.weight_dtype) for s in up],
            return_dict=True, num_frames=x.num_frames,
        )
        if reference:
            return self.reference.call("unet_main", module, x.noisy, x.timesteps, **kwargs).sample
        return module(x.noisy, x.timesteps, **kwargs).sample

    def _mse(self, pred: torch.Tensor, x: StepInputs) -> tuple[torch.Tensor, torch.Tensor]:
        b, f = x.batch_size, x.num_frames
        shape = (2 * b, f, *pred.shape[1:])
        mse = region_mse(pred.float().reshape(shape), x.target.reshape(shape), x.weights.repeat(2, 1, 1, 1, 1))
        return mse[:b], mse[b:]

    def policy_mse(self, x: StepInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Region-weighted MSE of the policy on winners and losers, ``[B]`` each (with gradient)."""
        with self._autocast():
            residuals = self._brushnet(x, self.policy_brushnet, reference=False)
            pred = self._unet(x, self.policy_unet, residuals, reference=False)
        return self._mse(pred, x)

    @torch.no_grad()
    def reference_mse(self, x: StepInputs, policy_residuals: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The same for the reference (no gradient, eval mode); reuses ``policy_residuals`` when BrushNet
        is frozen."""
        brushnet, unet = self.unwrap(self.policy_brushnet), self.unwrap(self.policy_unet)
        with self._autocast(), eval_mode(brushnet, unet):
            if policy_residuals is not None and not self.reference.covers("brushnet"):
                residuals = tuple(r.detach() if torch.is_tensor(r) else [s.detach() for s in r]
                                  for r in policy_residuals)
            else:
                residuals = self._brushnet(x, brushnet, reference=True)
            pred = self._unet(x, unet, residuals, reference=True)
        return self._mse(pred, x)

    def loss(self, x: StepInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Policy and reference passes on shared inputs, then ``regdpo.dpo.dpo_loss``."""
        c = self.config
        with self._autocast():
            residuals = self._brushnet(x, self.policy_brushnet, reference=False)
            pred = self._unet(x, self.policy_unet, residuals, reference=False)
        mse_w, mse_l = self._mse(pred, x)
        ref_w, ref_l = self.reference_mse(x, residuals)
        return dpo_loss(mse_w, mse_l, ref_w, ref_l, c.beta_dpo, form=c.loss_form, loser_clip=c.loser_clip,
                        sft_weight=c.sft_weight, anchor_weight=c.anchor_weight, loser_weight=c.loser_weight,
                        pair_weights=x.pair_weights)

    def __call__(self, batch: dict[str, Any], generator: torch.Generator | None = None,
                 timesteps: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss(self.inputs(batch, generator, timesteps))
