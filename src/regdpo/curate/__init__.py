"""Curating a generated dataset: ``regdpo select`` (which negatives to train on) and
``regdpo prune`` (delete the candidates left out)."""
