"""regdpo: preference-pair (DPO) datasets for video-inpainting diffusion models.

The winner of each pair is the ground-truth clip, the loser a deliberately flawed
inpainting of the same clip under the same mask (hallucination, blur or flicker),
composited onto the GT so that both are pixel-identical outside the hole.
"""

__version__ = "0.1.0"
