"""Quality checks of a generated dataset: ``regdpo audit`` and ``regdpo preview``.

``metrics`` holds the pure measurements (numpy / OpenCV, CPU only), ``runner`` streams
videos through them (optionally in worker processes), ``report`` writes ``audit.json`` and
the self-contained ``audit.html``, ``media`` encodes preview clips.
"""
