"""Negative generators ("backends"): classical (CPU, no weights) and models (ProPainter + DiffuEraser)."""

from .base import BackendResult, Clip, NegativeBackend, plan_segments

__all__ = ["BackendResult", "Clip", "NegativeBackend", "plan_segments"]
