"""The evaluation gate: frozen eval sets (``regdpo evalset``), models compared on them with paired statistics
(``regdpo eval``), and keeping eval sources out of training (``--exclude_evalset``). See docs/evaluation.md."""
