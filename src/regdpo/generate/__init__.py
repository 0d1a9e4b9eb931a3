"""The negative generator: sources -> clips -> masks -> backend negatives -> atomic video entries.

``regdpo generate`` / ``generate_dpo_negatives.py`` run :func:`regdpo.generate.pipeline.run_generation`.
Modules: ``sources`` (DAVIS, YouTube-VOS, plain videos, embedded samples), ``clips`` (frame
selection and working size), ``masks`` (random / hard / object hole masks), ``pipeline``
(resumable loop), ``cli`` (flags).
"""
