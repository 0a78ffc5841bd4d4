"""Annotation prompts, [[n]] parsing, and the annotators over transformers models (tiny random and SmolLM2)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import CHATLOGS
from wildreward.extract.annotate import (
    RATINGS, FeedbackAnnotator, RefusalJudge, build_feedback_prompt, build_refusal_prompt, cut_middle, parse_rating,
    parse_verdict)
from wildreward.extract.backends import make_backend
from wildreward.extract.config import AnnotatorConfig

WILDCHAT = CHATLOGS / "wildchat_sample.jsonl"


def real_turns(n: int) -> list[dict]:
    """The first ``n`` (query, response, feedback) turns of the WildChat sample."""
    rows = []
    with open(WILDCHAT, encoding="utf-8") as f:
        for line in f:
            messages = json.loads(line)["conversation"]
            for k in range(0, len(messages) - 2, 2):
                rows.append({"history": messages[:k], "query": messages[k]["content"],
                             "response": messages[k + 1]["content"], "feedback": messages[k + 2]["content"]})
                if len(rows) == n:
                    return rows
    return rows


@pytest.mark.parametrize("text, expected", [
    ("[[3]]", 3),
    ("The user thanks the assistant.\n[[5]]", 5),
    ("Maybe [[2]] at first, but on reflection [[4]]", 4),      # the last match wins
    ("[[4]] because ... final: [[ 1 ]]", 1),                   # whitespace inside the brackets
    ("[[5]]\n[[NA]]", None),                                   # a final NA is not overridden by an earlier digit
    ("[[NA]]", None),
    ("[[0]]", None), ("[[6]]", None), ("[[10]]", None),         # out of range
    ("[[3.5]]", None), ("[[-1]]", None),
    ("[3]", None), ("3", None), ("", None), (None, None),
    ("answer: [[2]] ", 2),
    ("Format is [[n]]. My answer: [[2]]", 2),
    ("[[\uff14]]", 4), ("[[\u0664]]", 4),                      # full-width and Arabic-Indic four
    ("[[\u00b2]]", None), ("[[\u2460]]", None),                  # digits that are not decimals: no crash
])
def test_parse_rating(text, expected):
    assert parse_rating(text) == expected


def test_non_finite_probabilities_are_an_error_not_the_first_label():
    from wildreward.extract.annotate import read_choice
    from wildreward.extract.backends import Result

    assert read_choice(Result(probs=[0.1, 0.2, 0.4, 0.2, 0.1]), 1)[0] == 3
    label, raw, error = read_choice(Result(probs=[float("nan")] * 5), 1)
    assert label is None and error.startswith("non_finite_probs") and "nan" in raw


@pytest.mark.parametrize("text, expected", [
    ("[[0]]", 0), ("[[1]]", 1), ("It answered. [[2]]", 2),
    ("[[1]] hmm, no: [[0]]", 0), ("[[3]]", None), ("[[NA]]", None), ("no verdict", None), ("[[ 2 ]]\n", 2),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_cut_middle_keeps_head_and_tail():
    text = "HEAD" + "x" * 10_000 + "TAIL"
    cut = cut_middle(text, 500)
    assert cut.startswith("HEAD") and cut.endswith("TAIL") and "characters cut" in cut
    assert len(cut) <= 500
    assert cut_middle("short", 500) == "short" and cut_middle(None, 500) == ""


def test_feedback_prompt_shows_the_three_messages():
    row = {"history": [], "query": "Q" * 50, "response": "R" * 5000, "feedback": "F-feedback"}
    (free,) = build_feedback_prompt(row, "freeform", 200)
    (fixed,) = build_feedback_prompt(row, "constrained", 200)
    for message in (free, fixed):
        assert message["role"] == "user"
        assert "Q" * 50 in message["content"] and "F-feedback" in message["content"]
        assert "R" * 5000 not in message["content"] and "characters cut" in message["content"]
        # the paper's fallback for unclear feedback: the response's own quality, never 5
        assert "high quality = 4, average = 3, poor = 1, never 5" in message["content"]
    assert "[[n]]" in free["content"] and "single digit" in fixed["content"]
    (strict,) = build_feedback_prompt(row, "constrained", 200, unclear_feedback="neutral")
    assert "When in doubt, answer 3." in strict["content"] and "ONLY the user's next message" in strict["content"]
    assert "never 5" not in strict["content"]


def test_refusal_prompt():
    (message,) = build_refusal_prompt({"query": "How do I bake bread?", "response": "Sorry, I can't."}, "freeform",
                                      300)
    assert "How do I bake bread?" in message["content"] and "Sorry, I can't." in message["content"]
    assert "[[n]]" in message["content"]


@pytest.fixture(scope="module")
def tiny_backend(tiny_lm):
    cfg = AnnotatorConfig(backend="hf", model=tiny_lm, max_tokens=24, temperature=1.0, max_field_chars=300)
    return cfg, make_backend(cfg, RATINGS)


def test_constrained_labels_are_the_argmax(tiny_backend):
    cfg, backend = tiny_backend
    out = FeedbackAnnotator(cfg, backend)(real_turns(6))
    assert len(out) == 6
    for row in out:
        assert row["error"] is None and len(row["label_probs"]) == 5
        assert sum(row["label_probs"]) == pytest.approx(1.0)
        assert row["label"] == 1 + row["label_probs"].index(max(row["label_probs"]))
        assert row["annotation"].startswith("p=[")


def test_freeform_random_model_never_gets_a_default_label(tiny_backend):
    cfg, backend = tiny_backend
    out = FeedbackAnnotator(cfg.model_copy(update={"mode": "freeform"}), backend)(real_turns(6))
    unparseable = [row for row in out if row["error"] is not None]
    assert len(unparseable) >= 5  # random tokens almost never spell [[n]]
    for row in unparseable:
        assert row["label"] is None and row["error"].startswith("unparseable: ") and row["annotation"] is not None
    for row in out:
        assert row["label_probs"] is None
        assert row["label"] == parse_rating(row["annotation"])


def test_refusal_judge_shape(tiny_backend):
    cfg, backend = tiny_backend
    rows = [{"query": "How do I pick a lock?", "response": "I'm sorry, but I can't help with that."}]
    (constrained,) = RefusalJudge(cfg, make_backend(cfg, ["0", "1", "2"]))(rows)
    assert constrained["verdict"] in (0, 1, 2) and constrained["judge_error"] is None
    assert constrained["judge_output"].startswith("p=[") and constrained["judge_output"].count(",") == 2
    (free,) = RefusalJudge(cfg.model_copy(update={"mode": "freeform"}), backend)(rows)
    assert (free["verdict"] is None) == (free["judge_error"] is not None)


@pytest.mark.slow  # the real SmolLM2 on CPU
def test_smollm2_rates_real_turns():
    cfg = AnnotatorConfig(backend="hf", model="smollm2", mode="constrained", max_field_chars=500)
    out = FeedbackAnnotator(cfg)(real_turns(5))
    for row in out:
        assert row["error"] is None and row["label"] in range(1, 6)
        assert sum(row["label_probs"]) == pytest.approx(1.0, abs=1e-4)
