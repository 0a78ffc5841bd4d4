import json
import os
import random

import pytest

from tests.conftest import CHATLOGS
from wildreward.extract.config import FilterConfig
from wildreward.extract.filters import filter_reason
from wildreward.extract.mine import (SimilarityScorer, find_mining_candidates, following_ids, lends_label,
                                     mined_only_through, resolve_mining, score_pairwise)
from wildreward.models import resolve_model

WILDCHAT = CHATLOGS / "wildchat_sample.jsonl"


def turn(conversation_id, index, label, feedback=None):
    return {"id": f"{conversation_id}_turn{index}", "conversation_id": conversation_id, "turn_index": index,
            "label": label, "feedback": feedback if feedback is not None else f"{conversation_id} fb{index}"}


def ids(candidates):
    return [(c["id"], c["future_id"], c["offset"]) for c in candidates]


# ---------------------------------------------------------------- candidates

def test_candidates_from_shuffled_rows_of_several_conversations():
    turns = [
        turn("a", 0, 3), turn("a", 1, 4), turn("a", 2, 5), turn("a", 3, 3), turn("a", 4, 1),
        turn("b", 0, 3), turn("b", 1, 2), turn("b", 2, 5),
    ]
    expected = [
        ("a_turn0", "a_turn1", 1), ("a_turn0", "a_turn2", 2),
        ("b_turn0", "b_turn2", 2),
    ]
    for seed in range(5):
        rows = turns[:]
        random.Random(seed).shuffle(rows)
        assert ids(find_mining_candidates(rows, lookahead=2)) == expected


def test_candidate_fields():
    [c] = find_mining_candidates([turn("a", 5, 5, "thanks, great"), turn("a", 4, 3, "what about rust?")], 2)
    assert c == {"id": "a_turn4", "future_id": "a_turn5", "offset": 1, "future_label": 5,
                 "text": "what about rust?", "future_text": "thanks, great"}


def test_lookahead_boundaries():
    turns = [turn("a", 0, 3), turn("a", 1, 3), turn("a", 2, 3), turn("a", 3, 4)]
    assert ids(find_mining_candidates(turns, 1)) == [("a_turn2", "a_turn3", 1)]
    assert ids(find_mining_candidates(turns, 2)) == [("a_turn1", "a_turn3", 2), ("a_turn2", "a_turn3", 1)]
    assert ids(find_mining_candidates(turns, 3)) == [
        ("a_turn0", "a_turn3", 3), ("a_turn1", "a_turn3", 2), ("a_turn2", "a_turn3", 1)]


def test_offset_counts_turn_indices_not_surviving_rows():
    # turn 1 was filtered out: turn 2 is two turns later, so lookahead 1 must not reach it.
    turns = [turn("a", 0, 3), turn("a", 2, 5)]
    assert find_mining_candidates(turns, 1) == []
    assert ids(find_mining_candidates(turns, 2)) == [("a_turn0", "a_turn2", 2)]


def test_none_labels_are_ignored():
    turns = [turn("a", 0, None), turn("a", 1, 4), turn("a", 2, 3), turn("a", 3, None), turn("a", 4, 5)]
    assert ids(find_mining_candidates(turns, 2)) == [("a_turn2", "a_turn4", 2)]


def test_turns_of_other_conversations_are_never_paired():
    # b's turn 1 sits right "after" a's turn 0 in the input, but belongs to another conversation.
    turns = [turn("a", 0, 3), turn("b", 1, 5), turn("b", 2, 4), turn("a", 3, 5)]
    assert find_mining_candidates(turns, 2) == []


def test_duplicate_turn_positions_are_an_error():
    with pytest.raises(ValueError, match="twice"):
        find_mining_candidates([turn("a", 0, 3), turn("a", 0, 4)], 2)


# ---------------------------------------------------------------- resolution

def cand(turn_id, offset, future_label=5):
    return {"id": turn_id, "future_id": f"{turn_id}+{offset}", "offset": offset, "future_label": future_label,
            "text": "t", "future_text": "f"}


def test_first_gated_offset_wins_and_each_turn_is_mined_once():
    candidates = [cand("x", 2, 4), cand("x", 1, 5), cand("y", 1, 5), cand("y", 2, 4), cand("z", 1), cand("z", 2)]
    sims = [0.9, 0.8, 0.3, 0.7, 0.1, 0.2]
    mined = resolve_mining(candidates, sims, threshold=0.5, mined_label="copy")
    assert mined == {
        "x": {"label": 5, "mined_from": "x+1", "similarity": 0.8},   # offset 1 wins although offset 2 scores higher
        "y": {"label": 4, "mined_from": "y+2", "similarity": 0.7},   # offset 1 fails the gate, offset 2 passes
    }


def test_paper_label_is_always_raw_4():
    mined = resolve_mining([cand("x", 1, 5), cand("y", 1, 4)], [0.9, 0.9], 0.6, "paper")
    assert {k: v["label"] for k, v in mined.items()} == {"x": 4, "y": 4}
    mined = resolve_mining([cand("x", 1, 5), cand("y", 1, 4)], [0.9, 0.9], 0.6, "copy")
    assert {k: v["label"] for k, v in mined.items()} == {"x": 5, "y": 4}


def test_threshold_is_strict():
    assert resolve_mining([cand("x", 1)], [0.6], 0.6, "paper") == {}
    assert resolve_mining([cand("x", 1)], [0.6000001], 0.6, "paper") == {
        "x": {"label": 4, "mined_from": "x+1", "similarity": 0.6000001}}


def test_resolution_input_errors():
    with pytest.raises(ValueError, match="similarities"):
        resolve_mining([cand("x", 1)], [], 0.6, "paper")
    with pytest.raises(ValueError, match="mined_label"):
        resolve_mining([cand("x", 1)], [0.9], 0.6, "future")


# ---------------------------------------------------------------- filters after mining (the original's order)

def full_turn(**changes):
    words = "please explain how the quick sort algorithm picks its pivot element"
    base = {"id": "c_turn1", "conversation_id": "c", "turn_index": 1, "language": "en",
            "history": [{"role": "user", "content": words}, {"role": "assistant", "content": words}],
            "query": words, "response": words, "feedback": "thanks, that works"}
    return {**base, **changes}


def test_a_turn_dropped_as_a_training_row_still_lends_its_label():
    """The neutral turn's feedback is the next turn's query: "and in Python?" is too short to train on, but its
    own feedback ("thanks") is what rescues the turn before it (08.split.py filters after 05's mining)."""
    cfg = FilterConfig()
    short_query = full_turn(query="And in Python?")
    assert filter_reason(short_query, cfg) == "short_query" and lends_label(short_query, cfg)
    for lender in (full_turn(response="Sure."), full_turn(query="draw me a cat in the style of Monet please"),
                   full_turn(history=[{"role": "user", "content": "x"}] * 22),
                   full_turn(query="mail me at someone@example.com with the whole answer please")):
        assert filter_reason(lender, cfg) is not None and lends_label(lender, cfg)
    # The rules the original applied before mining (03.gen_train.py), and what leaves nothing to annotate.
    for kept_out in (full_turn(language="fr"), full_turn(feedback="  "), full_turn(query="x " * 5000)):
        assert not lends_label(kept_out, cfg)
    # history_too_long comes first in RULES, but the 4,096-word cap behind it still applies before mining
    long_history = full_turn(history=[{"role": "user", "content": "word " * 300}] * 22)
    assert filter_reason(long_history, cfg) == "history_too_long" and not lends_label(long_history, cfg)


def test_following_ids():
    import pyarrow as pa

    neutral = pa.table({"conversation_id": ["a", "b", "a"], "turn_index": [0, 4, 1]})
    assert sorted(following_ids(neutral, 2).to_pylist()) == ["a_turn1", "a_turn2", "a_turn3", "b_turn5", "b_turn6"]
    assert following_ids(neutral.slice(0, 0), 2).to_pylist() == []


def test_mined_only_through_the_given_futures():
    candidates = [cand("x", 1), cand("x", 2), cand("y", 1), cand("z", 1), cand("w", 1)]
    sims = [0.9, 0.8, 0.9, 0.9, 0.1]
    # x has a kept future at offset 2 too; z is gated only through a dropped turn; w fails the gate anyway
    assert mined_only_through(candidates, sims, 0.5, {"x+1", "z+1", "w+1"}) == {"z"}
    assert mined_only_through(candidates, sims, 0.5, set()) == set()


# ---------------------------------------------------------------- similarity (real MiniLM)

@pytest.fixture(scope="module")
def scorer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SimilarityScorer(resolve_model("minilm"), batch_tokens=512)  # small: many chunks in each test


def wildchat_feedback(limit: int) -> list[str]:
    """User messages from the second turn on: what the pipeline calls feedback."""
    texts = []
    with open(WILDCHAT, encoding="utf-8") as f:
        for line in f:
            users = [m["content"] for m in json.loads(line)["conversation"] if m["role"] == "user"]
            texts.extend(t for t in users[1:] if t.strip())
            if len(texts) >= limit:
                return texts[:limit]
    return texts


@pytest.mark.slow  # the real MiniLM on 100 pairs, twice
def test_fast_scorer_matches_pairwise_baseline_on_real_text(scorer):
    texts = wildchat_feedback(50)
    assert len(texts) == 50
    # Each text is used in up to four pairs, both as text and as future_text, so deduplication matters.
    candidates = [{"text": texts[i], "future_text": texts[(i + k) % 50]} for k in (1, 2) for i in range(50)]
    fast = scorer(candidates)
    slow = score_pairwise(scorer.model, candidates)
    assert len(fast) == len(slow) == 100
    assert max(abs(a - b) for a, b in zip(fast, slow)) < 1e-5
    assert len({round(s, 4) for s in fast}) > 50      # real, varied numbers, not a constant


def test_fast_scorer_encodes_each_unique_text_once(scorer, monkeypatch):
    calls = []
    encode = scorer.model.encode

    def spy(texts, **kwargs):
        calls.append(list(texts))
        return encode(texts, **kwargs)

    monkeypatch.setattr(scorer.model, "encode", spy)
    candidates = [{"text": "a cat", "future_text": "a dog"}, {"text": "a dog", "future_text": "a cat"},
                  {"text": "a cat", "future_text": "a cat"}]
    sims = scorer(candidates)
    assert sorted(t for call in calls for t in call) == ["a cat", "a dog"]
    assert sims[0] == pytest.approx(sims[1], abs=1e-6)
    assert sims[2] == pytest.approx(1.0, abs=1e-5)
    assert scorer([]) == []


def test_same_topic_scores_higher_than_unrelated(scorer):
    close = [
        {"text": "Can you make this Python function run faster?",
         "future_text": "Thanks! How could I speed up the Python loop even more?"},
        {"text": "Write the second chapter of the fantasy story about the dragon.",
         "future_text": "Great, now continue the dragon story with chapter three."},
        {"text": "请把这段代码改成用Java实现", "future_text": "谢谢，这个Java代码还能再优化吗"},
    ]
    unrelated = [
        {"text": "Can you make this Python function run faster?",
         "future_text": "What is a good recipe for banana bread?"},
        {"text": "Write the second chapter of the fantasy story about the dragon.",
         "future_text": "How do I file my taxes as a freelancer?"},
        {"text": "请把这段代码改成用Java实现", "future_text": "What's the weather like in Paris in spring?"},
    ]
    close_sims, unrelated_sims = scorer(close), scorer(unrelated)
    assert min(close_sims) > max(unrelated_sims)
    assert all(s > 0.5 for s in close_sims[:2])
    assert all(s < 0.3 for s in unrelated_sims)
