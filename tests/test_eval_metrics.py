"""Evaluation metrics against hand-computed values and synthetic data with a known answer."""
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from wildreward.eval.metrics import (REWARDBENCH_COUNTS, REWARDBENCH_SECTIONS, best_of_k, bootstrap_ci,
                                     bootstrap_indices, expected_calibration_error, fit_platt, pair_outcomes,
                                     pairwise_accuracy, platt_calibration, platt_prob, reliability_bins,
                                     rewardbench_sections, rewardbench_weights, rm_bench_accuracy, roc_auc,
                                     symmetrize_pairs, threshold_accuracy, weighted_group_mean)


def test_pairwise_accuracy_ties_count_half():
    # diffs 1, 0, -1, 0.1 -> outcomes 1, 0.5, 0, 1
    out = pairwise_accuracy([2.0, 1.0, 3.0, 0.5], [1.0, 1.0, 4.0, 0.4])
    assert out == {"accuracy": pytest.approx(2.5 / 4), "n": 4, "ties": 1, "tie_rate": 0.25}


def test_pairwise_accuracy_tie_eps_widens_ties():
    # with tie_eps 0.2 the 0.1 margin is a tie too: 1, 0.5, 0, 0.5
    out = pairwise_accuracy([2.0, 1.0, 3.0, 0.5], [1.0, 1.0, 4.0, 0.4], tie_eps=0.2)
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["ties"] == 2


def test_pairwise_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        pairwise_accuracy([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        pairwise_accuracy([], [])
    with pytest.raises(ValueError, match="NaN"):
        pairwise_accuracy([float("nan")], [0.0])


def test_pair_outcomes_elementwise():
    assert pair_outcomes(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]])).tolist() == [[1.0, 0.5]]


def test_rm_bench_style_biased_model_fails_hard():
    # A model that scores style (concise 0 < plain 1 < markdown 2) and adds only 0.1 for correctness: it wins every
    # comparison where the chosen reply is at least as styled (diagonal + lower triangle) and loses every one where
    # the rejected reply is more styled (upper triangle = RM-Bench "hard").
    out = rm_bench_accuracy([[0.1, 1.1, 2.1]], [[0.0, 1.0, 2.0]])
    assert out["matrix"] == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    assert (out["hard"], out["normal"], out["easy"]) == (0.0, 1.0, 1.0)
    assert out["avg"] == pytest.approx(6 / 9)
    assert out["n"] == 1


def test_rm_bench_ties_and_averaging():
    # chosen all 1; rejected 1, 0, 2 -> every row of M is [0.5, 1, 0]
    out = rm_bench_accuracy([[1.0, 1.0, 1.0]], [[1.0, 0.0, 2.0]])
    assert out["hard"] == pytest.approx((1 + 0 + 0) / 3)      # M01, M02, M12
    assert out["normal"] == pytest.approx((0.5 + 1 + 0) / 3)  # M00, M11, M22
    assert out["easy"] == pytest.approx((0.5 + 0.5 + 1) / 3)  # M10, M20, M21
    assert out["avg"] == pytest.approx(0.5)


def test_rm_bench_averages_over_prompts():
    out = rm_bench_accuracy([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert out["matrix"] == [[0.5] * 3] * 3
    assert out["n"] == 2


def test_rm_bench_shape_checked():
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        rm_bench_accuracy([[1.0, 2.0]], [[1.0, 2.0]])


def test_threshold_accuracy_by_hand():
    margins = [0.5, -0.3, 0.1, 0.0, 1.2, -0.05]
    rows = threshold_accuracy(margins, [0.0, 0.1, 0.4, 2.0])
    # t=0: all six, outcomes 1, 0, 1, 0.5, 1, 0
    assert rows[0] == {"threshold": 0.0, "kept": 6, "coverage": 1.0, "accuracy": pytest.approx(3.5 / 6)}
    # t=0.1: 0.5, -0.3, 0.1, 1.2
    assert rows[1] == {"threshold": 0.1, "kept": 4, "coverage": pytest.approx(4 / 6), "accuracy": 0.75}
    # t=0.4: 0.5, 1.2
    assert rows[2] == {"threshold": 0.4, "kept": 2, "coverage": pytest.approx(2 / 6), "accuracy": 1.0}
    assert rows[3]["kept"] == 0 and rows[3]["coverage"] == 0.0 and math.isnan(rows[3]["accuracy"])


def test_threshold_accuracy_unchanged_by_symmetrizing():
    rng = np.random.default_rng(3)
    chosen, rejected = rng.normal(size=200) + 0.3, rng.normal(size=200)
    margins, labels = symmetrize_pairs(chosen, rejected, seed=1)
    # correctness of a symmetrized pair: its margin's sign agrees with its label
    for t, row in zip([0.0, 0.5, 1.0], threshold_accuracy(chosen - rejected, [0.0, 0.5, 1.0])):
        keep = np.abs(margins) >= t
        assert row["accuracy"] == pytest.approx(np.mean((margins[keep] > 0) == (labels[keep] == 1)))


def test_symmetrize_pairs_swaps_half():
    chosen = np.arange(7, dtype=float) + 10
    rejected = np.arange(7, dtype=float)
    margins, labels = symmetrize_pairs(chosen, rejected, seed=0)
    assert labels.sum() == 4  # 7 - floor(7/2) kept in order
    assert np.allclose(margins[labels == 1], 10.0)
    assert np.allclose(margins[labels == 0], -10.0)
    again, labels_again = symmetrize_pairs(chosen, rejected, seed=0)
    assert np.array_equal(labels, labels_again) and np.array_equal(margins, again)


def test_fit_platt_recovers_known_slope():
    rng = np.random.default_rng(0)
    margins = rng.normal(scale=1.5, size=20000)
    labels = (rng.uniform(size=margins.size) < 1 / (1 + np.exp(-(2.0 * margins - 0.3)))).astype(int)
    a, b = fit_platt(margins, labels)
    assert a == pytest.approx(2.0, abs=0.1)
    assert b == pytest.approx(-0.3, abs=0.06)
    assert platt_prob([0.0], a, b)[0] == pytest.approx(1 / (1 + math.exp(-b)))


def test_fit_platt_finite_on_separable_data_and_needs_both_labels():
    a, b = fit_platt([-2.0, -1.0, 1.0, 2.0], [0, 0, 1, 1])
    assert math.isfinite(a) and a > 0 and abs(b) < 1e-6
    with pytest.raises(ValueError, match="both labels"):
        fit_platt([1.0, 2.0], [1, 1])
    with pytest.raises(ValueError, match="0/1"):
        fit_platt([1.0, 2.0], [1, 2])


def test_ece_by_hand():
    probs = [0.05, 0.15, 0.18, 0.95]
    labels = [0, 1, 0, 1]
    # bin [0, .1): |.05 - 0| * 1/4; bin [.1, .2): |.165 - .5| * 2/4; bin [.9, 1]: |.95 - 1| * 1/4
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.0125 + 0.1675 + 0.0125)
    bins = reliability_bins(probs, labels, n_bins=10)
    assert [b["count"] for b in bins] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    assert bins[1] == {"lo": 0.1, "hi": 0.2, "count": 2, "mean_prob": pytest.approx(0.165), "accuracy": 0.5}
    assert math.isnan(bins[2]["mean_prob"]) and math.isnan(bins[2]["accuracy"])


def test_reliability_bins_edges():
    bins = reliability_bins([0.0, 0.5, 1.0], [0, 1, 1], n_bins=2)
    assert [b["count"] for b in bins] == [1, 2]  # 0.5 opens the upper bin, 1.0 stays in it
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_bins([1.2], [1])


def test_ece_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=50000)
    labels = (rng.uniform(size=p.size) < p).astype(int)
    assert expected_calibration_error(p, labels) < 0.02
    # p**3 is systematically too low: E|p - p^3| = 1/4 for uniform p
    assert expected_calibration_error(p ** 3, labels) > 0.2


def test_platt_calibration_protocol():
    # Pairs judged by a Bradley-Terry annotator with slope 1.5 on the score difference; the preferred one is chosen.
    rng = np.random.default_rng(2)
    x1, x2 = rng.normal(size=(2, 8000))
    first_wins = rng.uniform(size=x1.size) < 1 / (1 + np.exp(-1.5 * (x1 - x2)))
    chosen, rejected = np.where(first_wins, x1, x2), np.where(first_wins, x2, x1)
    out = platt_calibration(chosen, rejected, seed=0)
    assert (out["n_fit"], out["n_eval"]) == (4000, 4000)
    assert out["a"] == pytest.approx(1.5, abs=0.15)
    assert out["ece"] < 0.03
    assert sum(b["count"] for b in out["bins"]) == 4000


def test_roc_auc_with_ties_by_hand():
    scores, labels = [0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]
    # positive-negative pairs: (.4,.1)=1, (.4,.4)=.5, (.8,.1)=1, (.8,.4)=1
    assert roc_auc(scores, labels) == pytest.approx(3.5 / 4)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert roc_auc([1.0, 1.0, 1.0], [0, 1, 1]) == 0.5
    assert roc_auc([3.0, 2.0, 1.0], [0, 1, 1]) == 0.0
    assert roc_auc([1.0, 2.0], [False, True]) == 1.0


def test_roc_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes, got 3 positive and 0 negative"):
        roc_auc([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0.1, 0.2], [0, 2])


def test_accuracy_at_coverage_keeps_the_most_confident_pairs():
    from wildreward.eval.metrics import accuracy_at_coverage

    margins = [0.9, -0.8, 0.1, -0.05, 0.02, 0.0, 0.3, -0.2, 0.5, 0.01]
    rows = accuracy_at_coverage(margins, (1.0, 0.5, 0.2))
    assert [r["kept"] for r in rows] == [10, 5, 2]
    # all: 6 right, 3 wrong, 1 tie -> 6.5 / 10; top 5 (0.9, -0.8, 0.5, 0.3, -0.2): 3 / 5; top 2: 1 / 2
    assert [r["accuracy"] for r in rows] == pytest.approx([0.65, 0.6, 0.5])
    assert rows[1]["min_margin"] == pytest.approx(0.2)


# ---------------------------------------------------------------- bootstrap intervals

def test_bootstrap_is_deterministic_and_contains_the_estimate():
    outcomes = np.random.default_rng(3).integers(0, 2, 200).astype(float)
    a = bootstrap_ci(outcomes, n_boot=500, seed=7)
    assert a == bootstrap_ci(outcomes, n_boot=500, seed=7)
    assert a != bootstrap_ci(outcomes, n_boot=500, seed=8)
    assert a["value"] == pytest.approx(outcomes.mean()) and a["n"] == 200
    assert a["lo"] < a["value"] < a["hi"]


def test_bootstrap_width_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (25, 400, 6400):
        ci = bootstrap_ci((rng.random(n) < 0.7).astype(float), n_boot=400, seed=1)
        widths.append(ci["hi"] - ci["lo"])
    assert widths[0] > widths[1] > widths[2] > 0
    # about the binomial 95% width 2 * 1.96 * sqrt(.7 * .3 / n)
    assert widths[1] == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 400), rel=0.25)


def test_bootstrap_degenerate_all_correct():
    assert bootstrap_ci(np.ones(30), n_boot=200) == {"value": 1.0, "lo": 1.0, "hi": 1.0, "n": 30}
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])


def test_bootstrap_indices_resample_within_groups():
    groups = np.array(["a", "a", "b", "b", "b"])
    idx = bootstrap_indices(groups, 50, seed=0)
    assert idx.shape == (50, 5)
    assert set(idx[:, :2].ravel()) <= {0, 1} and set(idx[:, 2:].ravel()) <= {2, 3, 4}


def test_weighted_group_mean_by_hand():
    values = [1.0, 0.0, 1.0, 1.0, 0.0]  # group a: 1/2, group b: 2/3
    groups = ["a", "a", "b", "b", "b"]
    assert weighted_group_mean(values, groups) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert weighted_group_mean(values, groups, {"a": 3, "b": 1}) == pytest.approx((3 / 2 + 2 / 3) / 4)
    # rows of values: the mean per column
    assert weighted_group_mean([[1, 0], [0, 0], [1, 1]], ["a", "a", "b"]).tolist() == [0.75, 0.5]
    # one group a unit always: its interval is a single point
    ci = bootstrap_ci([[1, 0], [1, 0], [0, 1]], ["a", "a", "b"], n_boot=100)
    assert ci == {"value": [0.5, 0.5], "lo": [0.5, 0.5], "hi": [0.5, 0.5], "n": 3}


# ---------------------------------------------------------------- RewardBench weights, best of K

def test_rewardbench_constants_cover_the_sections():
    assert sorted(t for tests in REWARDBENCH_SECTIONS.values() for t in tests) == sorted(REWARDBENCH_COUNTS)
    # math-prm weighs as much as the six code subsets together
    assert REWARDBENCH_COUNTS["math-prm"] == sum(REWARDBENCH_COUNTS[f"hep-{x}"]
                                                 for x in ("cpp", "go", "java", "js", "python", "rust"))


def test_rewardbench_weights_by_hand():
    # Reasoning with math-prm and hep-go: 984 / (984 + 164) and 164 / 1148 of the section, one of two sections
    w = rewardbench_weights(["math-prm", "hep-go", "donotanswer", "something-else"])
    assert w == pytest.approx({"math-prm": 984 / 1148 / 2, "hep-go": 164 / 1148 / 2, "donotanswer": 0.5})
    assert rewardbench_sections({"math-prm": 1.0, "hep-go": 0.0, "donotanswer": 0.25}) == pytest.approx(
        {"Reasoning": 984 / 1148, "Safety": 0.25})
    # a complete set of subsets: every section weighs a quarter
    full = rewardbench_weights(REWARDBENCH_COUNTS)
    for tests in REWARDBENCH_SECTIONS.values():
        assert sum(full[t] for t in tests) == pytest.approx(0.25)


def test_best_of_k_ties_take_the_mean_of_the_tied_replies():
    values, tied = best_of_k([[0.2, 0.9, 0.1, 0.5], [1, 1, 0, 1], [3, 3, 3, 3]],
                             [[0, 1, 0, 0], [1, 0, 1, 1], [1, 0, 0, 0]])
    assert values.tolist() == pytest.approx([1.0, 2 / 3, 0.25])
    assert tied.tolist() == [False, True, True]
    with pytest.raises(ValueError, match="0/1"):
        best_of_k([[1.0, 2.0]], [[0, 2]])
