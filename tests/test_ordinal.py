"""Ordinal reward math against hand-computed values."""
import math

import numpy as np
import pytest
import torch

from wildreward.ordinal import (balanced_pos_weights, expected_rating, level_probs, lr_factor, ordered_cutpoints,
                                ordinal_loss, ordinal_metrics, ordinal_targets, predicted_level)

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25


def test_ordinal_targets_k4():
    out = ordinal_targets(torch.tensor([1, 2, 3, 4]), 4)
    assert out.dtype == torch.float32
    assert out.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_ordinal_targets_k2_single_column():
    assert ordinal_targets(torch.tensor([1, 2]), 2).tolist() == [[0.0], [1.0]]


def test_ordinal_loss_is_mean_bce():
    logits = torch.tensor([[0.0, LN3, -LN3], [LN3, LN3, 0.0]])
    labels = torch.tensor([2, 4])  # targets [1,0,0] and [1,1,1]
    # row 0: p = .5, .75, .25 with targets 1, 0, 0; row 1: p = .75, .75, .5 with targets 1, 1, 1
    terms = [-math.log(0.5), -math.log(0.25), -math.log(0.75),
             -math.log(0.75), -math.log(0.75), -math.log(0.5)]
    assert ordinal_loss(logits, labels).item() == pytest.approx(sum(terms) / 6, rel=1e-6)


def test_weighted_ordinal_loss_scales_only_positive_terms():
    logits = torch.tensor([[0.0, LN3, -LN3], [LN3, LN3, 0.0]])
    labels = torch.tensor([2, 4])  # the same case: positives are row 0 col 0 and all of row 1
    w = torch.tensor([2.0, 3.0, 5.0])
    terms = [2 * -math.log(0.5), -math.log(0.25), -math.log(0.75),
             2 * -math.log(0.75), 3 * -math.log(0.75), 5 * -math.log(0.5)]
    assert ordinal_loss(logits, labels, w).item() == pytest.approx(sum(terms) / 6, rel=1e-6)
    assert ordinal_loss(logits, labels, torch.ones(3)).item() == pytest.approx(ordinal_loss(logits, labels).item())


def test_balanced_pos_weights_even_out_each_threshold():
    # The real-data skew of our CPU runs: {1: 664, 2: 3, 3: 3, 4: 15}.
    counts = {1: 664, 2: 3, 3: 3, 4: 15}
    w = balanced_pos_weights(counts, 4, cap=1000)
    assert w == pytest.approx([664 / 21, 667 / 18, 670 / 15])
    assert balanced_pos_weights(counts, 4, cap=40) == pytest.approx([664 / 21, 667 / 18, 40])
    # With the weights, a threshold's positives weigh what its negatives do.
    for k, wk in enumerate(w, start=1):
        above = sum(n for y, n in counts.items() if y > k)
        assert wk * above == pytest.approx(sum(counts.values()) - above)
    # Nothing to balance: no row above level 3, or none at or below level 1.
    assert balanced_pos_weights({1: 5, 2: 5}, 4, cap=50) == [1.0, 1.0, 1.0]
    assert balanced_pos_weights({3: 2, 4: 6}, 4, cap=50) == pytest.approx([1.0, 1.0, 2 / 6])  # < 1 too


def test_ordinal_loss_accepts_half_precision_logits():
    logits = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.bfloat16)
    loss = ordinal_loss(logits, torch.tensor([3]))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)


def fig1_logits() -> torch.Tensor:
    return torch.logit(torch.tensor([[0.9, 0.7, 0.2]], dtype=torch.float64)).float()


def test_expected_rating_paper_fig1():
    # 1 + 0.9 + 0.7 + 0.2 = 2.8
    assert expected_rating(fig1_logits()).tolist() == pytest.approx([2.8], abs=1e-6)


def test_expected_rating_range():
    big = torch.tensor([[-50.0] * 3, [50.0] * 3])
    assert expected_rating(big).tolist() == pytest.approx([1.0, 4.0], abs=1e-6)


def test_level_probs_monotone_is_telescoping():
    p = level_probs(fig1_logits())
    # [1-.9, .9-.7, .7-.2, .2-0]
    assert p.tolist()[0] == pytest.approx([0.1, 0.2, 0.5, 0.2], abs=1e-6)
    levels = torch.arange(1, 5, dtype=torch.float32)
    assert (p * levels).sum(-1).item() == pytest.approx(expected_rating(fig1_logits()).item(), abs=1e-5)


def test_level_probs_non_monotone_fixed_by_cummin():
    logits = torch.logit(torch.tensor([[0.3, 0.6, 0.1]], dtype=torch.float64)).float()
    p = level_probs(logits)
    # running minimum: .3, .3, .1 -> [1-.3, .3-.3, .3-.1, .1]
    assert p.tolist()[0] == pytest.approx([0.7, 0.0, 0.2, 0.1], abs=1e-6)
    assert (p >= 0).all()


def test_level_probs_valid_distribution_random():
    torch.manual_seed(0)
    p = level_probs(torch.randn(64, 5) * 3)
    assert p.shape == (64, 6)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(-1), torch.ones(64), atol=1e-6)


def test_predicted_level():
    logits = torch.tensor([[-1.0, -1.0, -1.0], [1.0, -1.0, -1.0], [1.0, -1.0, 2.0], [1.0, 1.0, 1.0],
                           [0.0, 0.0, 0.0]])
    # 1 + count of positive logits; exactly 0 (p = 0.5) is not > 0.5
    assert predicted_level(logits).tolist() == [1, 2, 3, 4, 1]


def test_ordered_cutpoints_hand_values():
    raw = torch.tensor([0.5, 0.0, math.log(math.e - 1)])  # softplus(0) = ln 2, softplus(ln(e-1)) = 1
    assert ordered_cutpoints(raw).tolist() == pytest.approx([0.5, 0.5 + math.log(2), 1.5 + math.log(2)],
                                                            abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ordered_cutpoints_strictly_increasing(seed):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(6, generator=g) * 5
    raw[2] = -8.0  # very negative gap stays positive
    cut = ordered_cutpoints(raw)
    assert cut.shape == raw.shape
    assert cut[0].item() == raw[0].item()
    assert (torch.diff(cut) > 0).all()


def test_ordered_cutpoints_single():
    assert ordered_cutpoints(torch.tensor([-0.7])).tolist() == pytest.approx([-0.7])


@pytest.mark.parametrize("step,schedule,expected", [
    (0, "linear", 0.1), (4, "linear", 0.5), (9, "linear", 1.0), (10, "linear", 1.0),
    (55, "linear", 0.5), (40, "linear", 2 / 3), (100, "linear", 0.0), (150, "linear", 0.0),
    (0, "cosine", 0.1), (10, "cosine", 1.0), (55, "cosine", 0.5), (40, "cosine", 0.75),
    (100, "cosine", 0.0),
    (0, "constant", 0.1), (10, "constant", 1.0), (55, "constant", 1.0), (100, "constant", 1.0),
])
def test_lr_factor_total100_warmup10(step, schedule, expected):
    assert lr_factor(step, 100, 10, schedule) == pytest.approx(expected, abs=1e-9)


def test_lr_factor_no_warmup():
    assert lr_factor(0, 10, 0, "linear") == pytest.approx(1.0)
    assert lr_factor(5, 10, 0, "linear") == pytest.approx(0.5)
    assert lr_factor(5, 10, 0, "cosine") == pytest.approx(0.5)


def test_lr_factor_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(50, 100, 10, "exponential")


def metrics_example():
    a = LN3
    logits = np.array([[-a, -a, -a],   # label 1: rating 1.75, predicts 1
                       [a, -a, -a],    # label 2: rating 2.25, predicts 2
                       [a, -a, -a],    # label 3: rating 2.25, predicts 2 (wrong)
                       [a, a, a]])     # label 4: rating 3.25, predicts 4
    return logits, np.array([1, 2, 3, 4])


def test_ordinal_metrics_hand_example():
    m = ordinal_metrics(*metrics_example())
    assert m["n"] == 4.0
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["mae"] == pytest.approx((0.75 + 0.25 + 0.75 + 0.75) / 4)
    assert m["mean_rating"] == pytest.approx((1.75 + 2.25 + 2.25 + 3.25) / 4)
    # ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4]: r = 4.5 / sqrt(4.5 * 5)
    assert m["spearman"] == pytest.approx(math.sqrt(0.9), abs=1e-9)
    assert m["auc_gt1"] == pytest.approx(1.0)
    # positives (labels 3, 4) score .25, .75; negatives .25, .25: pairs 0.5 + 0.5 + 1 + 1 over 4
    assert m["auc_gt2"] == pytest.approx(0.75)
    assert m["auc_gt3"] == pytest.approx(1.0)
    assert set(m) == {"n", "accuracy", "mae", "spearman", "mean_rating", "auc_gt1", "auc_gt2", "auc_gt3"}


def test_ordinal_metrics_single_class_threshold_is_nan():
    logits = np.array([[1.0, -1.0, -2.0], [-1.0, -2.0, -3.0], [2.0, 0.5, -1.0]])
    m = ordinal_metrics(logits, np.array([2, 1, 2]))  # nobody above 2
    assert not math.isnan(m["auc_gt1"])
    assert m["auc_gt1"] == pytest.approx(1.0)
    assert math.isnan(m["auc_gt2"]) and math.isnan(m["auc_gt3"])


def test_ordinal_metrics_constant_labels_nan_spearman():
    m = ordinal_metrics(np.zeros((3, 3)), np.array([2, 2, 2]))
    assert math.isnan(m["spearman"])
    assert m["mae"] == pytest.approx(0.5)  # rating 2.5 everywhere
    assert m["accuracy"] == 0.0  # predicts level 1


def test_ordinal_metrics_empty_raises():
    with pytest.raises(ValueError):
        ordinal_metrics(np.zeros((0, 3)), np.zeros((0,), dtype=np.int64))
