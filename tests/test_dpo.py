"""The Region-Reg-DPO loss (regdpo.dpo): properties over random inputs (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from regdpo.dpo import DIAGNOSTICS, LOSS_FORMS, diagnostics_to_floats, dpo_loss, region_mse, region_weights

LN2 = math.log(2.0)
mse = st.floats(min_value=0.05, max_value=3.0, allow_nan=False)
batch = st.lists(mse, min_size=1, max_size=6)
forms = st.sampled_from(LOSS_FORMS)
betas = st.floats(min_value=0.5, max_value=5000.0)


def t(values):
    return torch.tensor(values, dtype=torch.float32)


@settings(max_examples=60, deadline=None)
@given(w=batch, l_scale=st.floats(0.2, 5.0), form=forms, beta=betas,
       clip=st.one_of(st.none(), st.floats(0.0, 2.0)), lw=st.floats(0.1, 1.0))
def test_policy_equal_to_reference_gives_ln2_and_half_accuracy(w, l_scale, form, beta, clip, lw):
    mw = t(w)
    ml = mw * l_scale
    loss, diag = dpo_loss(mw, ml, mw.clone(), ml.clone(), beta, form=form, loser_clip=clip, loser_weight=lw)
    assert loss.item() == pytest.approx(LN2, abs=1e-6)
    assert diag["implicit_acc"].item() == 0.5
    assert diag["loser_dominant_ratio"].item() == 0.0
    assert diag["win_gap"].item() == 0.0 and diag["lose_gap"].item() == 0.0


@settings(max_examples=60, deadline=None)
@given(w=batch, worse=st.floats(0.01, 1.0), form=forms, beta=st.floats(0.5, 50.0))
def test_a_worse_loser_lowers_the_loss(w, worse, form, beta):
    ref = t(w)
    base, _ = dpo_loss(ref, ref, ref, ref, beta, form=form)
    lower, diag = dpo_loss(ref, ref + worse, ref, ref, beta, form=form)
    assert lower.item() < base.item()
    assert diag["implicit_acc"].item() == 1.0
    assert diag["loser_dominant_ratio"].item() == 1.0  # only the loser moved
    assert diag["lose_gap"].item() == pytest.approx(worse, rel=1e-4)


@settings(max_examples=40, deadline=None)
@given(w=batch, better=st.floats(0.01, 0.04), form=forms)
def test_a_better_winner_lowers_the_loss_and_is_not_loser_dominant(w, better, form):
    ref = t(w)
    base, _ = dpo_loss(ref, ref, ref, ref, 10.0, form=form)
    lower, diag = dpo_loss(ref - better, ref, ref, ref, 10.0, form=form)
    assert lower.item() < base.item()
    assert diag["implicit_acc"].item() == 1.0 and diag["loser_dominant_ratio"].item() == 0.0
    assert diag["win_gap"].item() == pytest.approx(-better, rel=1e-3)


@settings(max_examples=40, deadline=None)
@given(w=batch, jitter=st.floats(-5e-7, 5e-7), form=forms)
def test_float32_rounding_between_policy_and_reference_is_a_tie(w, jitter, form):
    ref = t(w)
    loss, diag = dpo_loss(ref * (1 + jitter), ref * (1 - jitter), ref, ref, 5000.0, form=form)
    assert diag["implicit_acc"].item() == 0.5 and diag["loser_dominant_ratio"].item() == 0.0
    assert loss.item() == pytest.approx(LN2, abs=1e-2)


def test_loser_clip_caps_the_reward_of_a_worse_loser():
    ref = t([1.0, 1.0])
    a, _ = dpo_loss(ref, ref * 3, ref, ref, 10.0, form="logratio", loser_clip=0.5)
    b, _ = dpo_loss(ref, ref * 30, ref, ref, 10.0, form="logratio", loser_clip=0.5)
    assert a.item() == pytest.approx(b.item())
    c, _ = dpo_loss(ref, ref * 30, ref, ref, 10.0, form="logratio")
    assert c.item() < b.item()


def test_diff_form_is_diffusion_dpo():
    mw, ml, rw, rl = t([1.0]), t([1.3]), t([1.1]), t([1.2])
    loss, diag = dpo_loss(mw, ml, rw, rl, 2500.0, form="diff")
    inside = -0.5 * 2500.0 * ((1.0 - 1.3) - (1.1 - 1.2))
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-inside))), rel=1e-5)
    assert diag["inside_term_mean"].item() == pytest.approx(inside, rel=1e-5)


def test_logratio_form_with_weights_and_regularisers():
    mw, ml, rw, rl = t([1.2]), t([2.0]), t([1.0]), t([1.0])
    loss, diag = dpo_loss(mw, ml, rw, rl, 10.0, form="logratio", loser_clip=1.0, loser_weight=0.25,
                          sft_weight=0.05, anchor_weight=1.0)
    gw, gl = math.log(1.2), min(math.log(2.0), 1.0)
    inside = -0.5 * 10.0 * (gw - 0.25 * gl)
    expected = math.log1p(math.exp(-inside)) + 0.05 * 1.2 + 1.0 * gw
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert diag["anchor_loss"].item() == pytest.approx(gw, rel=1e-5)
    assert diag["sft_loss"].item() == pytest.approx(1.2, rel=1e-6)


def test_ties_count_one_half_and_dominance_counts_only_correct_pairs():
    ref = t([1.0, 1.0, 1.0, 1.0])
    mw = t([1.0, 0.9, 1.0, 1.1])   # tie, better winner, same, worse winner
    ml = t([1.0, 1.05, 1.2, 1.0])  # tie, small loser loss, loser worse, same
    _, diag = dpo_loss(mw, ml, ref, ref, 10.0)
    # inside > 0 for pairs 1 and 2; pair 0 ties; pair 3 is wrong
    assert diag["implicit_acc"].item() == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert diag["loser_dominant_ratio"].item() == pytest.approx(0.5)  # pair 2 of {1, 2}
    assert diag["inside_term_min"].item() < 0 < diag["inside_term_max"].item()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), form=forms)
def test_fp16_inputs_give_an_fp32_result(seed, form):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(4, generator=g) + 0.5).half()
    y = (torch.rand(4, generator=g) + 0.5).half()
    loss, diag = dpo_loss(x, y, x.clone(), y.clone(), 5000.0, form=form)
    assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in diag.values())
    pred = torch.randn(2, 3, 4, 8, 8, generator=g).half()
    target = torch.randn(2, 3, 4, 8, 8, generator=g).half()
    weights = torch.rand(2, 3, 1, 8, 8, generator=g).half()
    assert region_mse(pred, target, weights).dtype == torch.float32


def test_fp32_arithmetic_keeps_a_difference_fp16_would_lose():
    # per-side MSEs of ~1.16 that differ by ~6e-4: fp16 spacing at 1.16 is ~9.8e-4
    mw, ml = torch.tensor([1.1600], dtype=torch.float32), torch.tensor([1.1606], dtype=torch.float32)
    _, diag = dpo_loss(mw, ml, ml.clone(), mw.clone(), 2500.0)
    assert diag["implicit_acc"].item() == 1.0  # the policy prefers the winner: model diff < ref diff


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), region=st.sampled_from(["hole", "boundary", "context"]))
def test_a_zero_weight_makes_that_region_irrelevant(seed, region):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (2, 3, 1, 8, 8), generator=g)
    masks = {name: (labels == k).float() for k, name in enumerate(("hole", "boundary", "context"))}
    ws = {"w_hole": 1.0, "w_boundary": 0.75, "w_context": 0.05}
    ws[f"w_{region}"] = 0.0
    weights = region_weights(masks["hole"], masks["boundary"], masks["context"], **ws)
    pred = torch.randn(2, 3, 4, 8, 8, generator=g)
    target = torch.randn(2, 3, 4, 8, 8, generator=g)
    changed = pred + 10.0 * torch.randn(pred.shape, generator=g) * masks[region]
    assert torch.allclose(region_mse(pred, target, weights), region_mse(changed, target, weights))


def test_region_mse_is_the_weighted_mean_per_video():
    pred = torch.zeros(2, 1, 2, 1, 2)
    target = torch.tensor([[[[[1.0, 3.0]], [[1.0, 3.0]]]], [[[[2.0, 2.0]], [[2.0, 2.0]]]]])
    weights = torch.tensor([[[[[1.0, 0.0]]]], [[[[0.5, 0.5]]]]])
    out = region_mse(pred, target, weights)
    assert out.shape == (2,) and out.tolist() == [1.0, 4.0]
    assert region_mse(pred, target, torch.zeros_like(weights)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        region_mse(pred, target[:1], weights)


def test_region_weights_values_and_checks():
    hole = torch.tensor([1.0, 0.0, 0.0])
    boundary = torch.tensor([0.0, 1.0, 0.0])
    context = torch.tensor([0.0, 0.0, 1.0])
    assert region_weights(hole, boundary, context).tolist() == pytest.approx([1.0, 0.75, 0.05])
    with pytest.raises(ValueError, match="w_context"):
        region_weights(hole, boundary, context, w_context=-1)


def test_gradient_flows_to_the_policy_only():
    mw = torch.tensor([1.0, 1.2], requires_grad=True)
    ml = torch.tensor([1.1, 0.9], requires_grad=True)
    rw = torch.tensor([1.05, 1.1], requires_grad=True)
    rl = torch.tensor([1.0, 1.0], requires_grad=True)
    loss, _ = dpo_loss(mw, ml, rw, rl, 100.0, form="logratio", sft_weight=0.05)
    loss.backward()
    assert mw.grad is not None and ml.grad is not None and rw.grad is None and rl.grad is None
    assert (mw.grad > 0).all() and (ml.grad < 0).all()  # lower the winner's MSE, raise the loser's


def test_diagnostics_are_documented_and_convert_to_floats():
    x = torch.tensor([1.0, 1.2])
    _, diag = dpo_loss(x, x + 0.1, x, x, 10.0)
    assert set(diag) == set(DIAGNOSTICS)
    floats = diagnostics_to_floats(diag)
    assert all(isinstance(v, float) for v in floats.values()) and floats["implicit_acc"] == 1.0


def test_bad_arguments_fail_clearly():
    x = torch.ones(2)
    with pytest.raises(ValueError, match="form"):
        dpo_loss(x, x, x, x, 1.0, form="other")
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(x, torch.ones(3), x, x, 1.0)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, 0.0)


@settings(max_examples=60, deadline=None)
@given(w=batch, scale=st.floats(-0.5, 0.5), form=forms, beta=st.floats(0.5, 50.0))
def test_implicit_acc_margin_counts_pairs_won_by_more_than_the_margin(w, scale, form, beta):
    from regdpo.dpo import ACC_MARGIN

    ref = t(w)
    model_l = ref * (1 + scale * torch.linspace(0, 1, len(w)))  # from a tie to a clear win or loss
    _, diag = dpo_loss(ref, model_l, ref, ref, beta, form=form)
    gap_l = model_l - ref if form == "diff" else torch.log(model_l) - torch.log(ref)
    inside = 0.5 * beta * gap_l
    assert diag["implicit_acc_margin"].item() == pytest.approx((inside > ACC_MARGIN).float().mean().item())
    assert diag["implicit_acc_margin"].item() <= diag["implicit_acc"].item()


def test_implicit_acc_margin_is_zero_at_float_noise():
    ref = t([1.0, 1.2, 0.8])
    _, diag = dpo_loss(ref * (1 - 1e-5), ref * (1 + 1e-5), ref, ref, 10.0, form="logratio")
    assert diag["implicit_acc"].item() == 1.0 and diag["implicit_acc_margin"].item() == 0.0


def test_pair_weights_scale_each_pairs_dpo_term():
    mw = torch.tensor([1.0, 1.2, 0.9])
    ml = torch.tensor([1.3, 1.0, 1.1])
    rw = torch.tensor([1.05, 1.1, 1.0])
    rl = torch.tensor([1.0, 1.05, 1.0])
    w = torch.tensor([2.0, 0.5, 0.0])
    _, plain = dpo_loss(mw, ml, rw, rl, 10.0, form="logratio")
    _, weighted = dpo_loss(mw, ml, rw, rl, 10.0, form="logratio", pair_weights=w)
    terms = [float(dpo_loss(mw[i:i + 1], ml[i:i + 1], rw[i:i + 1], rl[i:i + 1], 10.0, form="logratio")[1]["dpo_loss"])
             for i in range(3)]
    assert float(weighted["dpo_loss"]) == pytest.approx(sum(float(a) * b for a, b in zip(w, terms)) / 3, rel=1e-6)
    assert float(plain["dpo_loss"]) == pytest.approx(sum(terms) / 3, rel=1e-6)
    _, ones = dpo_loss(mw, ml, rw, rl, 10.0, form="logratio", pair_weights=torch.ones(3))
    assert float(ones["dpo_loss"]) == float(plain["dpo_loss"])
    same = torch.tensor([1.0, 1.0])  # policy == reference: mean(w) * ln 2
    _, step0 = dpo_loss(same, same, same, same, 10.0, pair_weights=torch.tensor([1.5, 0.5]))
    assert float(step0["dpo_loss"]) == pytest.approx(math.log(2))
    mwg = mw.clone().requires_grad_(True)  # a zero weight: that pair's DPO term gives no gradient
    loss, _ = dpo_loss(mwg, ml, rw, rl, 10.0, form="logratio", pair_weights=w)
    loss.backward()
    assert float(mwg.grad[2]) == 0.0 and float(mwg.grad[0]) != 0.0
    for bad in (torch.tensor([1.0, -1.0, 1.0]), torch.tensor([1.0, float("nan"), 1.0]), torch.ones(2)):
        with pytest.raises(ValueError, match="pair_weights"):
            dpo_loss(mw, ml, rw, rl, 10.0, pair_weights=bad)
