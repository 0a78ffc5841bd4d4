"""Feedback labellers and their agreement figures: keyword rules, cascade budget, F1 / intervals, gold set."""
import math

import pytest

from wildreward.extract.config import AnnotatorConfig
from wildreward.extract.gold import GOLD_FILE, digest, read_gold, sample_gold, split_of
from wildreward.extract.labellers import (UNSURE, CascadeLabeller, KeywordLabeller, agreement, bootstrap_interval,
                                          confident_label, f1, group_of, group_probs, keyword_label)
from wildreward.template import FEEDBACK_CHARS, build_feedback_text


@pytest.mark.parametrize("feedback, label", [
    ("This is wrong, the capital is Canberra.", 1),
    ("No, that's not what I asked for.", 1),
    ("You forgot the edge case where n = 0.", 2),
    ("I get an error: TypeError on line 3", 2),
    ("Thanks!", 5),
    ("Thank you so much, this solved it", 5),
    ("Interesting, how would this work for drones?", 4),
    ("Now write the second chapter in the same style.", 3),
    ("What is the formula for the area of a circle?", 3),
    ("谢谢", 5),
])
def test_keyword_label(feedback, label):
    assert keyword_label(feedback)[0] == label


def test_keyword_praise_with_a_long_request_is_engagement():
    long_request = "thanks! " + " ".join(["now extend it to the multi-agent case please"] * 5)
    assert keyword_label(long_request) == (4, "satisfaction+request")


def test_keyword_labeller_rows():
    out = KeywordLabeller()([{"feedback": "Thanks!"}, {"feedback": "next one please, about cats"}])
    assert [r["label"] for r in out] == [5, 3]
    assert all(r["error"] is None for r in out)


def test_groups_of_the_five_categories():
    assert [group_of(y) for y in range(1, 6)] == [0, 0, 1, 2, 2]


def test_confident_label_decides_the_group_first():
    assert confident_label([0.1, 0.6, 0.1, 0.1, 0.1], 0.5) == 2
    # negative mass 0.45 beats neutral's 0.4 although 3 is the single most probable label
    assert confident_label([0.2, 0.25, 0.4, 0.1, 0.05], 0.0) == 2
    assert confident_label([0.05, 0.05, 0.4, 0.3, 0.2], 0.0) == 4
    assert confident_label([0.2, 0.25, 0.4, 0.1, 0.05], 0.5) is None


def test_thresholds_let_a_rare_group_win():
    probs = [0.2, 0.15, 0.6, 0.03, 0.02]  # negative 0.35 loses the argmax to neutral
    assert confident_label(probs, 0.0) == 3
    assert confident_label(probs, 0.0, {"negative": 0.3, "positive": 0.5}) == 1
    assert confident_label([0.05, 0.05, 0.6, 0.25, 0.05], 0.0, {"negative": 0.3, "positive": 0.25}) == 4


def test_tune_thresholds_by_hand():
    from wildreward.extract.labellers import tune_thresholds

    # P(negative) ranks the two negatives first; the best cut is at 0.3 (F1 1.0)
    probs = [[0.2, 0.2, 0.6, 0, 0], [0.1, 0.2, 0.7, 0, 0], [0.1, 0.1, 0.8, 0, 0], [0, 0.05, 0.55, 0.4, 0]]
    out = tune_thresholds(probs, [2, 1, 3, 4])
    assert out["negative"] == pytest.approx(0.3) and out["dev_negative_f1"] == pytest.approx(1.0)
    assert out["positive"] == pytest.approx(0.4) and out["dev_positive_f1"] == pytest.approx(1.0)


def test_f1_and_agreement_by_hand():
    pred = [1, 2, 3, 3, 5, None]
    gold = [2, 3, 3, 1, 4, 3]
    out = agreement(pred, gold)
    assert (out["n"], out["labelled"], out["unlabelled"]) == (6, 5, 1)
    # labelled rows: groups pred N N 0 0 P vs gold N 0 0 N P -> 3 of 5 agree
    assert out["accuracy3"] == pytest.approx(3 / 5)
    assert out["accuracy5"] == pytest.approx(1 / 5)
    # negative: pred {0,1}, gold {0,3} -> tp 1, F1 = 2/(2+2)
    assert out["negative_f1"] == pytest.approx(0.5)
    assert out["positive_f1"] == pytest.approx(1.0)
    import numpy as np
    assert math.isnan(f1(np.array([False]), np.array([False])))


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_data():
    pred = [1, 3, 3, 2, 3, 3, 5, 3] * 10
    gold = [1, 3, 2, 2, 3, 1, 5, 3] * 10
    est = agreement(pred, gold)["negative_f1"]
    lo, hi = bootstrap_interval(pred, gold, "negative_f1", n_boot=300)
    assert lo <= est <= hi and hi - lo > 0.05
    lo_big, hi_big = bootstrap_interval(pred * 10, gold * 10, "negative_f1", n_boot=300)
    assert hi_big - lo_big < hi - lo


def test_group_probs_sum_to_one():
    g = group_probs([[0.1, 0.2, 0.3, 0.3, 0.1], [0, 0, 1, 0, 0]])
    assert g.tolist()[1] == [0, 1, 0]
    assert g[0].tolist() == pytest.approx([0.3, 0.3, 0.4])


class CountingLLM:
    """Stands in for the LLM annotator: labels every row 2 and counts the rows it was sent."""

    def __init__(self):
        self.rows = 0

    def __call__(self, rows):
        self.rows += len(rows)
        return [{"label": 2, "label_probs": None, "annotation": "llm", "error": None} for _ in rows]


def unsure_classifier(rows):
    return [{"label": None, "label_probs": [0.2] * 5, "annotation": "c", "error": UNSURE} if "?" in r["feedback"]
            else {"label": 3, "label_probs": [0, 0, 1, 0, 0], "annotation": "c", "error": None} for r in rows]


def test_cascade_spends_its_budget_then_leaves_rows_unlabelled():
    llm = CountingLLM()
    cascade = CascadeLabeller(unsure_classifier, llm, llm_budget=3)
    out = cascade([{"feedback": f} for f in ["a?", "b", "c?", "d?"]])
    assert [r["label"] for r in out] == [2, 3, 2, 2]
    out = cascade([{"feedback": f} for f in ["e?", "f?", "g"]])
    assert [r["label"] for r in out] == [None, None, 3]
    assert [r["error"] for r in out] == [UNSURE, UNSURE, None]
    assert llm.rows == 3


def test_classifier_backend_needs_a_model_dir(tmp_path):
    from wildreward.extract.config import ExtractConfig
    from wildreward.extract.pipeline import run_extract

    cfg = ExtractConfig(output_dir=str(tmp_path), annotator=AnnotatorConfig(backend="classifier"))
    with pytest.raises(ValueError, match="needs annotator.classifier.model_dir"):
        run_extract(cfg)
    assert not any(tmp_path.iterdir())  # refused before any work


def test_feedback_text_puts_the_next_message_first_and_cuts_long_fields():
    text = build_feedback_text("q" * 1000, "r" * 1000, "f" * 1000)
    assert text.startswith("User's next message: fff")
    assert text.count("f") <= FEEDBACK_CHARS["feedback"] + 5
    assert text.count("r") <= FEEDBACK_CHARS["response"] + 10
    assert build_feedback_text(" q ", "r", "thanks") == (
        "User's next message: thanks\nEnd of the assistant's response: r\nUser's query: q")


def test_encode_rows_feedback_input():
    from transformers import AutoTokenizer

    from wildreward.models import resolve_model
    from wildreward.train.data import encode_rows

    minilm_tok = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    rows = [{"id": "a", "history": [], "query": "q " * 400, "response": "r " * 400, "feedback": "Thanks a lot!",
             "label": 5}]
    out = encode_rows(rows, minilm_tok, 64, "middle", input_kind="feedback")[0]
    assert len(out["input_ids"]) == 64 and out["truncated"]
    assert "thanks a lot" in minilm_tok.decode(out["input_ids"])


# ---- the gold set ---------------------------------------------------------------------------------------------

def test_split_of_is_fixed_and_balanced():
    ids = [f"conv{i}" for i in range(2000)]
    test = sum(split_of(i) == "test" for i in ids)
    assert 900 < test < 1100
    assert split_of("conv7") == split_of("conv7")


def test_sample_gold_strata():
    turns = [{"id": f"t{i}", "feedback": "thanks" if i % 10 == 0 else "next question"} for i in range(200)]
    rows = sample_gold(turns, 50, 10, seed=1)
    uniform = [r for r in rows if r["stratum"] == "uniform"]
    enriched = [r for r in rows if r["stratum"] == "enriched"]
    assert len(uniform) == 50 and len(enriched) == 10
    assert all(r["feedback"] == "thanks" for r in enriched)
    assert len({r["id"] for r in rows}) == 60
    assert rows == sample_gold(turns, 50, 10, seed=1)


def test_committed_gold_file_is_well_formed():
    rows = read_gold(GOLD_FILE)
    assert len(rows) >= 1000
    assert sum(r["stratum"] == "uniform" for r in rows) >= 700
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["reason"].strip() and isinstance(r["refusal"], bool) for r in rows)
    # splits follow the conversation id, so no conversation is in both
    conv = {}
    for r in rows:
        conv.setdefault(r["id"].rsplit("_turn", 1)[0], set()).add(r["split"])
    assert all(len(s) == 1 for s in conv.values())


@pytest.mark.slow
def test_gold_joins_the_sources_and_hides_test_labels(chatlogs):
    from wildreward.extract.gold import load_gold

    test = load_gold(chatlogs, ["test"], with_labels=False)
    assert len(test) == sum(r["split"] == "test" for r in read_gold())
    assert all("label" not in t and "reason" not in t and t["feedback"] for t in test)
    assert all(digest(t["feedback"]) == t["feedback_sha"] for t in test)


# ---- the probe ------------------------------------------------------------------------------------------------

def test_probe_fit_and_probs_cover_all_five_levels():
    import numpy as np

    from wildreward.extract.probe import fit_probe, probe_probs

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = np.where(x[:, 0] > 0.5, 2, np.where(x[:, 1] > 0.5, 5, 3))  # levels 1 and 4 never occur
    coef, intercept = fit_probe(x, y, 1.0)
    p = probe_probs(x, coef, intercept)
    assert p.shape == (60, 5) and np.allclose(p.sum(1), 1)
    assert np.all(p[:, 0] == 0) and np.all(p[:, 3] == 0)
    assert np.mean(p.argmax(1) + 1 == y) > 0.8
    two = fit_probe(x, np.where(x[:, 0] > 0, 2, 3), 1.0)  # sklearn keeps a single row for two classes
    assert np.mean(probe_probs(x, *two).argmax(1) + 1 == np.where(x[:, 0] > 0, 2, 3)) > 0.8


def test_probe_round_trips_without_pickle(tmp_path):
    import numpy as np

    from wildreward.extract.probe import load_probe, save_probe

    save_probe(tmp_path, np.ones((5, 3)), np.array([0, 1, -np.inf, 2, 3]))
    coef, intercept = load_probe(tmp_path)
    assert coef.shape == (5, 3) and np.isneginf(intercept[2])


@pytest.mark.slow
def test_probe_labeller_learns_from_gold_dev(chatlogs, tmp_path):
    """Trained on gold dev only; its out-of-fold negative F1 (held-out conversations) beats the majority class's
    0, and the saved labeller labels turns, flagging a language it never saw."""
    from wildreward.extract.classifier import LabellerConfig, run_labeller
    from wildreward.extract.labellers import ClassifierLabeller

    meta = run_labeller(LabellerConfig(output_dir=str(tmp_path), chatlogs_dir=str(chatlogs)))
    assert meta["kind"] == "probe" and meta["training_rows"] == sum(r["split"] == "dev" for r in read_gold())
    assert meta["decision"]["dev_negative_f1"] > 0.4 and meta["decision"]["dev_positive_f1"] > 0.4
    labeller = ClassifierLabeller(meta["model_dir"])
    out = labeller([{"feedback": "This is wrong, you didn't answer my question at all.", "language": "en"},
                    {"feedback": "Thanks a lot, that solved it!", "language": "en"},
                    {"feedback": "Was ist die Hauptstadt von Frankreich?", "language": "de"}])
    assert [r["label"] <= 2 for r in out[:1]] == [True] and out[1]["label"] >= 4
    assert "unseen_language" in out[2]["annotation"] and "unseen_language" not in out[0]["annotation"]
