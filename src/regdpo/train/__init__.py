"""Region-Reg-DPO training of DiffuEraser (stage 3, after DiffuEraser's stages 1 and 2).

- ``config``:  ``DPOStepConfig``, the loss and region-weight settings (standard library only);
- ``modules``: which parameters ``--train_modules`` trains; the frozen reference copy of only those;
- ``step``:    ``DiffuEraserDPOStep``, one DPO step on DiffuEraser's modules from a ``DPODataset`` batch;
- ``weights``: loading the modules from the user's folders, saving in DiffuEraser's layout;
- ``loop``:    the ``accelerate`` training loop behind ``train_region_reg_dpo.py``;
- ``score``:   ``regdpo score``, the reference model's margin per pair (``score.json``).

The loss itself is ``regdpo.dpo`` (pure torch). DiffuEraser's code is imported from the user's
checkout (``regdpo.backends.models_source``), never shipped.
"""
