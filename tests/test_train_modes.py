"""Train / eval modes and gradient checkpointing of the DPO step (regdpo.train.modes) on the real
DiffuEraser classes with tiny random weights, on CPU; skipped without a DiffuEraser checkout::

    REGDPO_DIFFUERASER_REPO=/path/to/DiffuEraser pytest tests/test_train_modes.py
"""

from __future__ import annotations

import pytest

from model_fixtures import load_tiny_modules, make_batch, make_step, tiny_case, training_marks

pytestmark = training_marks()
NFRAMES, SIZE = 4, 64


@pytest.fixture(scope="module")
def tiny(tiny_weights, tmp_path_factory):
    return tiny_case(tiny_weights, tmp_path_factory, "tiny_modes")


def step_of(modules, train_modules):
    return make_step(modules, train_modules=train_modules, loss_form="diff", beta_dpo=2500.0)


class CheckpointCounter:
    """Counts ``torch.utils.checkpoint.checkpoint`` calls (diffusers' blocks look it up at call time)."""

    def __init__(self, monkeypatch):
        import torch.utils.checkpoint

        self.calls = 0
        original = torch.utils.checkpoint.checkpoint

        def counting(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)


def one_step(tiny, train_modules, checkpointing, counter=None):
    """Checkpoint calls of the policy pass, of the reference pass, and the gradients of one real step."""
    import torch

    from regdpo.train.modes import enable_gradient_checkpointing

    m = load_tiny_modules(tiny)
    batch = make_batch(tiny, m, NFRAMES, SIZE)
    step = step_of(m, train_modules)
    if checkpointing:
        enable_gradient_checkpointing(m.unet_main, m.brushnet, train_modules)
    x = step.inputs(batch, torch.Generator().manual_seed(0))
    counter.calls = 0
    mse_w, mse_l = step.policy_mse(x)
    policy_calls = counter.calls
    step.reference_mse(x)
    reference_calls = counter.calls - policy_calls
    (mse_w.sum() - mse_l.sum()).backward()
    return policy_calls, reference_calls, [p.grad.clone() for p in step.trainable], (m, step)


@pytest.mark.parametrize("train_modules", ["motion", "spatial"])
def test_gradient_checkpointing_checkpoints_a_real_step(tiny, monkeypatch, train_modules):
    import torch

    counter = CheckpointCounter(monkeypatch)
    plain_calls, _, plain_grads, _ = one_step(tiny, train_modules, False, counter)
    calls, reference_calls, grads, (m, step) = one_step(tiny, train_modules, True, counter)
    assert plain_calls == 0
    assert calls > 0  # 0 while the modules stayed in from_pretrained's eval mode
    assert reference_calls == 0  # the reference pass runs in eval mode, without gradient
    assert m.unet_main.training and m.brushnet.training == (train_modules != "motion")
    assert not m.vae.training and not m.text_encoder.training
    assert len(grads) == len(plain_grads)
    for g, h in zip(grads, plain_grads):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-7)


def test_train_mode_changes_no_output(tiny):
    """Every dropout is 0 in DiffuEraser's tiny and published configurations: train mode = eval mode."""
    import torch

    from regdpo.backends.models_tiny import FULL, _unet_models
    from regdpo.train.modes import active_dropout, eval_mode

    m = load_tiny_modules(tiny)
    step = step_of(m, "spatial")
    x = step.inputs(make_batch(tiny, m, NFRAMES, SIZE), torch.Generator().manual_seed(1))
    with torch.no_grad():
        train_w, train_l = step.policy_mse(x)
        with eval_mode(m.brushnet, m.unet_main):
            eval_w, eval_l = step.policy_mse(x)
    assert m.unet_main.training and m.brushnet.training  # restored after the block
    assert torch.equal(train_w, eval_w) and torch.equal(train_l, eval_l)
    assert active_dropout(m.unet_main, m.brushnet) == []
    # attention through PyTorch's SDPA: diffusers 0.29.2's default processor, which DiffuEraser's classes keep
    from regdpo.train.optim import attention_processors

    assert list(attention_processors(m.unet_main, m.brushnet)) == ["AttnProcessor2_0"]
    with torch.device("meta"):  # the published sizes, no memory
        _, brushnet, unet_main = _unet_models(FULL, tiny.source)
    assert active_dropout(unet_main, brushnet) == []


def test_meta_count_shows_the_checkpointing_saving(tiny):
    """The memory bench's count (regdpo.train.memory) on the real classes at tiny size: every scope of
    checkpointing saves less than none, the script's 'all' less than diffusers' 'blocks'."""
    import torch

    from regdpo.backends.models_tiny import TINY, _unet_models
    from regdpo.train.memory import policy_saved_bytes

    with torch.device("meta"):
        _, brushnet, unet_main = _unet_models(TINY, tiny.source)
    models = {"unet_main": unet_main, "brushnet": brushnet}
    for train_modules in ("motion", "both"):
        off, blocks, every = (policy_saved_bytes(models, train_modules, ck, 6, 64, torch.float32)
                              for ck in ("off", "blocks", "all"))
        assert off["calls"] == 0 and 0 < blocks["calls"] < every["calls"]
        assert every["saved"] < blocks["saved"] < off["saved"]
        assert every["saved"] + every["recompute"] < off["saved"]
