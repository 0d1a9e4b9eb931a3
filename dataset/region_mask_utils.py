"""Three-region mask decomposition (M_h, M_b, M_c) for Region-Reg-DPO.

Thin entry point kept at this path for training scripts; the implementation is
``regdpo.regions`` (see its docstring for polarity, shapes and the latent rule).

    from dataset.region_mask_utils import decompose_regions, decompose_regions_latent
    mask_hole, mask_boundary, mask_context = decompose_regions(hole, boundary_dilation=7)
"""

from regdpo.regions import (  # noqa: F401
    decompose_regions,
    decompose_regions_latent,
    hole_to_latent,
    latent_kernel_size,
    to_hole_tensor,
)

__all__ = [
    "decompose_regions",
    "decompose_regions_latent",
    "hole_to_latent",
    "latent_kernel_size",
    "to_hole_tensor",
]
