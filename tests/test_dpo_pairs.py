"""Best-vs-worst pairing within each prompt, with dropped groups counted."""
import random

import pytest

from wildreward.dpo.pairs import build_pairs, final_answer


def sample(prompt_id, index, reward, error=None):
    return {"prompt_id": prompt_id, "sample_index": index, "response": f"{prompt_id}-{index}", "reward": reward,
            "error": error, "finished": True}


def reconciles(counts):
    return counts["groups"] == (counts["groups_too_few"] + counts["groups_all_tie"] + counts["pairs_below_margin"]
                                + counts["pairs"]) and counts["score_failures"] <= counts["samples"]


def test_final_answer():
    assert final_answer("<think>maybe 3</think>\n  The answer is 4. ") == "The answer is 4."
    assert final_answer("<think>a</think>b</think> c ") == "c"  # the last marker counts
    assert final_answer("  no reasoning here\n") == "no reasoning here"
    assert final_answer("<think>ran out of tokens") == "<think>ran out of tokens"
    assert final_answer("<think>x</think>") == ""


def test_shuffled_rows_pair_within_each_prompt_only():
    rng = random.Random(0)
    rewards = {f"p{k}": [rng.uniform(1, 4) for _ in range(8)] for k in range(16)}
    rows = [sample(pid, i, r) for pid, rs in rewards.items() for i, r in enumerate(rs)]
    rng.shuffle(rows)
    pairs, counts = build_pairs(rows)
    assert [p["prompt_id"] for p in pairs] == sorted(rewards)
    for p in pairs:
        rs = rewards[p["prompt_id"]]
        assert p["chosen_index"] == rs.index(max(rs)) and p["rejected_index"] == rs.index(min(rs))
        assert p["chosen_reward"] == max(rs) and p["rejected_reward"] == min(rs)
        assert p["margin"] == max(rs) - min(rs)
    assert counts == {"samples": 128, "score_failures": 0, "groups": 16, "groups_too_few": 0, "groups_all_tie": 0,
                      "pairs_below_margin": 0, "pairs": 16}
    rng.shuffle(rows)
    assert build_pairs(rows) == (pairs, counts)  # row order does not matter


def test_ties_go_to_the_lowest_sample_index():
    rows = [sample("a", 3, 4.0), sample("a", 1, 1.0), sample("a", 2, 4.0), sample("a", 0, 2.0), sample("a", 5, 1.0)]
    (pair,), _ = build_pairs(rows)
    assert (pair["chosen_index"], pair["rejected_index"]) == (2, 1)
    assert pair["margin"] == 3.0


def test_all_tie_group_is_dropped():
    rows = [sample("tie", i, 2.5) for i in range(8)] + [sample("ok", 0, 1.0), sample("ok", 1, 3.0)]
    pairs, counts = build_pairs(rows)
    assert [p["prompt_id"] for p in pairs] == ["ok"]
    assert counts["groups_all_tie"] == 1 and counts["pairs"] == 1 and reconciles(counts)


def test_a_response_is_never_paired_with_the_same_text():
    # Two copies of the best text scored apart (batch-dependent numerics do that): the rejected one is the worst
    # *different* response; a group whose responses are all the same text gives no pair.
    rows = [sample("a", 0, 3.0), sample("a", 1, 1.5), sample("a", 2, 2.0), sample("a", 3, 2.5)]
    rows[1]["response"] = rows[0]["response"]  # the lowest score went to a copy of the best text
    (pair,), counts = build_pairs(rows)
    assert (pair["chosen_index"], pair["rejected_index"], pair["margin"]) == (0, 2, 1.0)
    same = [sample("b", i, 2.0 + i / 1000) for i in range(4)]
    for row in same:
        row["response"] = "4"
    pairs, counts = build_pairs(same)
    assert pairs == [] and counts["groups_all_tie"] == 1 and reconciles(counts)


def test_min_margin():
    rows = [sample("small", 0, 2.0), sample("small", 1, 2.1), sample("big", 0, 1.0), sample("big", 1, 3.5),
            sample("edge", 0, 1.0), sample("edge", 1, 1.5)]
    pairs, counts = build_pairs(rows, min_margin=0.5)
    assert sorted(p["prompt_id"] for p in pairs) == ["big", "edge"]  # a margin equal to min_margin is kept
    assert counts["pairs_below_margin"] == 1 and reconciles(counts)
    assert build_pairs(rows)[1]["pairs"] == 3


def test_failed_scores_are_dropped_and_counted():
    rows = [sample("a", 0, None, error="HTTP 503 after 5 retries"), sample("a", 1, 3.0), sample("a", 2, 1.0),
            sample("a", 3, 4.0, error="timeout"),          # an error wins over a reward
            sample("a", 4, float("nan")),                   # a non-finite reward is a failure
            sample("b", 0, None, error="x"), sample("b", 1, 2.0),   # one scored sample left: too few
            sample("c", 0, None, error="x"), sample("c", 1, None, error="x")]
    pairs, counts = build_pairs(rows)
    assert [(p["prompt_id"], p["chosen_index"], p["rejected_index"]) for p in pairs] == [("a", 1, 2)]
    assert counts == {"samples": 9, "score_failures": 6, "groups": 3, "groups_too_few": 2, "groups_all_tie": 0,
                      "pairs_below_margin": 0, "pairs": 1}
    assert reconciles(counts)


def test_counts_reconcile_on_a_mixed_batch():
    rng = random.Random(1)
    rows = []
    for k in range(200):
        for i in range(rng.randint(1, 8)):
            failed = rng.random() < 0.2
            reward = rng.choice([1.0, 2.0, 2.0, 2.5, 3.0]) if k % 3 else 2.0
            rows.append(sample(k, i, None if failed else reward, "boom" if failed else None))
    rng.shuffle(rows)
    pairs, counts = build_pairs(rows, min_margin=0.75)
    assert reconciles(counts)
    assert counts["samples"] == len(rows) and counts["groups"] == 200 and counts["pairs"] == len(pairs)
    assert all(c > 0 for c in counts.values())
    assert all(p["margin"] >= 0.75 and p["chosen_index"] != p["rejected_index"] for p in pairs)


def test_empty_input_and_duplicate_rows():
    assert build_pairs([]) == ([], {"samples": 0, "score_failures": 0, "groups": 0, "groups_too_few": 0,
                                    "groups_all_tie": 0, "pairs_below_margin": 0, "pairs": 0})
    with pytest.raises(ValueError, match="duplicate sample"):
        build_pairs([sample("a", 0, 1.0), sample("a", 0, 2.0)])
