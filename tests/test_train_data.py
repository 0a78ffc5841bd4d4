"""Training data: RM input fitting, row validation, length grouping, padding."""
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from wildreward.template import CUT_MARK, TEMPLATE_FOOTER, build_rm_text, fit_rm_input
from wildreward.train.data import (collate, encode_rows, find_bad_rows, group_by_length, micro_batches_per_epoch,
                                   padding_efficiency)

NO_FLAGS = {"truncated": False, "history_cut": False, "query_cut": False, "response_cut": False}


@pytest.fixture(scope="module")
def minilm_tok():
    from transformers import AutoTokenizer

    from wildreward.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("minilm"))


@pytest.fixture(scope="module")
def lm_tok(tiny_lm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm)


@pytest.fixture(params=["minilm", "tiny_lm"])
def tok(request):
    return request.getfixturevalue("minilm_tok" if request.param == "minilm" else "lm_tok")


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


def n_plain(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def split_text(text: str) -> tuple[str, str]:
    """RM text -> (query, response) as rendered."""
    q = text.split("\n\n## User Query\n", 1)[1].split("\n\n## Assistant Response\n", 1)[0]
    r = text.split("\n\n## Assistant Response\n", 1)[1]
    assert r.endswith(TEMPLATE_FOOTER)
    return q, r[: -len(TEMPLATE_FOOTER)]


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


# ---- fit_rm_input ----------------------------------------------------------------------------------------------

def test_fit_short_example_unchanged(tok):
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi, how can I help?"}]
    text, flags = fit_rm_input(tok, history, "What is 2+2?", "It is 4.", 512)
    assert text == build_rm_text(history, "What is 2+2?", "It is 4.")
    assert flags == NO_FLAGS


def test_fit_exact_limit_is_not_cut(tok):
    response = words("r", 60)
    text = build_rm_text(None, "q", response)
    n = n_tokens(tok, text)
    assert fit_rm_input(tok, None, "q", response, n) == (text, NO_FLAGS)
    cut, flags = fit_rm_input(tok, None, "q", response, n - 1)
    assert flags == {"truncated": True, "history_cut": False, "query_cut": False, "response_cut": True}
    assert n_tokens(tok, cut) <= n - 1


def test_fit_long_history_drops_oldest_first(tok):
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}: " + words("h", 12)}
               for i in range(30)]
    query, response = "What about the last point?", "Here is my final answer."
    max_length = 300
    assert n_tokens(tok, build_rm_text(history, query, response)) > max_length
    text, flags = fit_rm_input(tok, history, query, response, max_length)
    assert flags == {"truncated": True, "history_cut": True, "query_cut": False, "response_cut": False}
    assert n_tokens(tok, text) <= max_length
    # result is the longest suffix of the history that fits
    kept = [j for j in range(len(history)) if text == build_rm_text(history[j:], query, response)]
    assert len(kept) == 1
    j = kept[0]
    assert 0 < j < len(history) - 1
    assert n_tokens(tok, build_rm_text(history[j - 1:], query, response)) > max_length
    assert "message 29:" in text and "message 0:" not in text
    assert split_text(text) == (query, response)


def test_fit_long_history_takes_few_tokenizations(tok):
    # A served request may carry thousands of history messages: dropping them one by one would tokenize the
    # whole text once per message.
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}: " + words("h", 6)}
               for i in range(2000)]
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0])
        return tok(*args, **kwargs)

    text, flags = fit_rm_input(counting, history, "Last question?", "Last answer.", 300)
    assert flags["history_cut"] and not flags["response_cut"]
    assert len(calls) <= 2 + math.ceil(math.log2(2000)) + 1
    j = next(j for j in range(len(history)) if text == build_rm_text(history[j:], "Last question?", "Last answer."))
    assert n_tokens(tok, text) <= 300 < n_tokens(tok, build_rm_text(history[j - 1:], "Last question?", "Last answer."))


def test_fit_history_dropped_entirely_then_response_cut(tok):
    history = [{"role": "user", "content": words("h", 50)}]
    response = words("r", 600)
    text, flags = fit_rm_input(tok, history, "q?", response, 256)
    assert flags["history_cut"] and flags["response_cut"] and not flags["query_cut"]
    assert "No previous context." in text
    assert n_tokens(tok, text) <= 256


def test_fit_huge_response_middle_keeps_both_ends(tok):
    response = "BEGINNING " + words("r", 1500) + " THEEND"
    query = "Summarise the document."
    max_length = 256
    text, flags = fit_rm_input(tok, None, query, response, max_length, mode="middle")
    assert flags == {"truncated": True, "history_cut": False, "query_cut": False, "response_cut": True}
    n = n_tokens(tok, text)
    assert max_length - 8 <= n <= max_length  # uses the room, does not overflow
    q, r = split_text(text)
    assert q == query
    assert r.count(CUT_MARK) == 1
    head, tail = r.split(CUT_MARK)
    assert head.startswith("BEGINNING r0 r1") and tail.endswith("r1499 THEEND")
    assert response.startswith(head) and response.endswith(tail)
    assert len(head) + len(tail) < len(response)
    # head and tail get about the same number of tokens
    assert abs(n_plain(tok, head) - n_plain(tok, tail)) <= 3


def test_fit_huge_response_right_keeps_beginning(tok):
    response = "BEGINNING " + words("r", 1500) + " THEEND"
    max_length = 256
    text, flags = fit_rm_input(tok, None, "Summarise.", response, max_length, mode="right")
    assert flags["response_cut"] and not flags["query_cut"]
    n = n_tokens(tok, text)
    assert max_length - 8 <= n <= max_length
    q, r = split_text(text)
    assert q == "Summarise."
    assert CUT_MARK not in r and "THEEND" not in r
    assert r.startswith("BEGINNING r0 r1") and response.startswith(r) and len(r) < len(response)


@pytest.mark.parametrize("mode", ["middle", "right"])
def test_fit_huge_query_and_response_share_room(tok, mode):
    query = "QSTART " + words("q", 1000) + " QEND"
    response = "RSTART " + words("r", 1000) + " REND"
    max_length = 301
    text, flags = fit_rm_input(tok, None, query, response, max_length, mode=mode)
    assert flags == {"truncated": True, "history_cut": False, "query_cut": True, "response_cut": True}
    assert n_tokens(tok, text) <= max_length
    q, r = split_text(text)
    assert q.startswith("QSTART q0") and r.startswith("RSTART r0")
    q_kept, r_kept = n_plain(tok, q), n_plain(tok, r)
    # the response keeps at least half the room (re-tokenising the cut text may shift a token)
    assert r_kept >= q_kept - 1
    assert r_kept >= 0.45 * (q_kept + r_kept)
    assert q_kept > 20  # the query is cut, not dropped


def test_fit_response_budget_at_least_its_share(minilm_tok, monkeypatch):
    # docstring: "The response keeps at least min_response_share of the space left for query + response".
    import wildreward.template as template

    budgets = []
    real_cut = template._cut

    def spy(tokenizer, text, budget, mode):
        budgets.append((text[:1], budget))
        return real_cut(tokenizer, text, budget, mode)

    monkeypatch.setattr(template, "_cut", spy)
    for max_length in (256, 257, 300, 301):  # even and odd room
        budgets.clear()
        fit_rm_input(minilm_tok, None, words("q", 1000), words("r", 1000), max_length)
        assert budgets and [b[0] for b in budgets[:2]] == ["q", "r"]
        for (_, q_budget), (_, r_budget) in zip(budgets[::2], budgets[1::2]):
            assert r_budget >= q_budget, (max_length, q_budget, r_budget)


def test_fit_small_response_left_whole_query_cut(tok):
    query, response = words("q", 1000), "Short answer here."
    text, flags = fit_rm_input(tok, None, query, response, 256)
    assert flags["query_cut"] and not flags["response_cut"]
    assert split_text(text)[1] == response
    assert n_tokens(tok, text) <= 256


def test_fit_max_length_too_small_raises(tok):
    with pytest.raises(ValueError, match="max_length"):
        fit_rm_input(tok, None, "a question", "an answer", 40)


# ---- find_bad_rows ---------------------------------------------------------------------------------------------

HISTORY_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def rows_table(rows: list[dict]) -> pa.Table:
    return pa.table({"id": pa.array([r["id"] for r in rows], pa.string()),
                     "history": pa.array([r.get("history", []) for r in rows], HISTORY_TYPE),
                     "query": pa.array([r["query"] for r in rows], pa.string()),
                     "response": pa.array([r["response"] for r in rows], pa.string()),
                     "label": pa.array([r["label"] for r in rows], pa.int64())})


def test_find_bad_rows_reasons():
    table = rows_table([
        {"id": "good", "query": "q", "response": "r", "label": 4,
         "history": [{"role": "user", "content": "hi"}]},
        {"id": "good1", "query": "q", "response": "r", "label": 1},
        {"id": "l0", "query": "q", "response": "r", "label": 0},
        {"id": "l5", "query": "q", "response": "r", "label": 5},
        {"id": "lnull", "query": "q", "response": "r", "label": None},
        {"id": "qempty", "query": "", "response": "r", "label": 2},
        {"id": "qspace", "query": " \n\t ", "response": "r", "label": 2},
        {"id": "qnull", "query": None, "response": "r", "label": 2},
        {"id": "rempty", "query": "q", "response": "", "label": 3},
    ])
    bad = find_bad_rows(table, num_levels=4)
    assert bad.column_names == ["id", "reason"]
    got = sorted(zip(bad["id"].to_pylist(), bad["reason"].to_pylist()))
    assert got == sorted([("l0", "label_out_of_range"), ("l5", "label_out_of_range"), ("lnull", "label_missing"),
                          ("qempty", "empty_query"), ("qspace", "empty_query"), ("qnull", "empty_query"),
                          ("rempty", "empty_response")])


def test_find_bad_rows_clean_table_and_multiple_reasons():
    clean = rows_table([{"id": "a", "query": "q", "response": "r", "label": 3}])
    bad = find_bad_rows(clean, num_levels=4)
    assert bad.num_rows == 0 and bad.column_names == ["id", "reason"]
    both = rows_table([{"id": "x", "query": "", "response": " ", "label": 9}])
    got = sorted(find_bad_rows(both, 4)["reason"].to_pylist())
    assert got == ["empty_query", "empty_response", "label_out_of_range"]


def test_find_bad_rows_float_labels_must_be_whole_numbers():
    table = rows_table([{"id": i, "query": "q", "response": "r", "label": 1} for i in ("a", "b", "c", "d", "e")])
    table = table.set_column(4, "label", pa.array([2.0, 2.5, float("nan"), 0.5, None], pa.float64()))
    got = sorted(zip(*find_bad_rows(table, 4).to_pydict().values()))
    assert got == [("b", "label_not_integer"), ("c", "label_not_integer"), ("d", "label_not_integer"),
                   ("d", "label_out_of_range"), ("e", "label_missing")]


@pytest.mark.parametrize("values, type_", [([True], pa.bool_()), (["3"], pa.string())])
def test_find_bad_rows_rejects_a_label_column_that_is_not_numeric(values, type_):
    table = rows_table([{"id": "a", "query": "q", "response": "r", "label": 1}])
    table = table.set_column(4, "label", pa.array(values, type_))
    with pytest.raises(ValueError, match=f"label column has type {type_}"):
        find_bad_rows(table, 4)


@pytest.mark.parametrize("column", ["label", "response", "history"])
def test_find_bad_rows_missing_column(column):
    table = rows_table([{"id": "a", "query": "q", "response": "r", "label": 3}]).drop_columns([column])
    with pytest.raises(ValueError, match=rf"\['{column}'\]"):
        find_bad_rows(table, 4)


# ---- encode_rows -----------------------------------------------------------------------------------------------

def test_encode_rows(minilm_tok):
    rows = [{"id": "a", "history": None, "query": "q", "response": "short", "label": 2},
            {"id": "b", "history": [], "query": "q", "response": words("r", 800), "label": 4}]
    out = encode_rows(rows, minilm_tok, 200, "middle")
    assert [e["id"] for e in out] == ["a", "b"] and [e["label"] for e in out] == [2, 4]
    assert out[0]["input_ids"] == minilm_tok(build_rm_text(None, "q", "short"))["input_ids"]
    assert not out[0]["truncated"] and out[1]["truncated"] and out[1]["response_cut"]
    assert all(len(e["input_ids"]) <= 200 for e in out)


# ---- batching --------------------------------------------------------------------------------------------------

def random_lengths(n=23, seed=7):
    return np.random.default_rng(seed).integers(5, 400, size=n).tolist()


def test_group_by_length_partition_and_sizes():
    lengths = random_lengths()
    batches = group_by_length(lengths, 4, np.random.default_rng(0))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert len(batches) == math.ceil(len(lengths) / 4)
    assert all(1 <= len(b) <= 4 for b in batches)
    assert sum(len(b) == 4 for b in batches) == len(batches) - 1


def test_group_by_length_batches_are_contiguous_in_length():
    lengths = random_lengths(n=40, seed=3)
    batches = group_by_length(lengths, 5, np.random.default_rng(1))
    ranges = sorted(((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches), reverse=True)
    for (lo_a, _), (_, hi_b) in zip(ranges, ranges[1:]):
        assert hi_b <= lo_a  # no batch's range overlaps another's
    # grouping beats the unsorted order
    naive = [list(range(i, min(i + 5, 40))) for i in range(0, 40, 5)]
    assert padding_efficiency(lengths, batches) > padding_efficiency(lengths, naive)


def test_group_by_length_seeded_and_shuffled():
    lengths = random_lengths(n=40, seed=3)
    a = group_by_length(lengths, 4, np.random.default_rng(123))
    b = group_by_length(lengths, 4, np.random.default_rng(123))
    c = group_by_length(lengths, 4, np.random.default_rng(124))
    assert a == b
    assert a != c and sorted(map(sorted, a)) == sorted(map(sorted, c))
    by_len = sorted(a, key=lambda batch: -max(lengths[i] for i in batch))
    assert a != by_len  # batch order is shuffled


def test_group_by_length_empty():
    assert group_by_length([], 4, np.random.default_rng(0)) == []


@pytest.mark.parametrize("rows,window,micro,expected", [
    (10, 4, 3, 5),     # windows 4, 4, 2 -> 2 + 2 + 1
    (8, 4, 2, 4),
    (5, 100, 2, 3),
    (0, 4, 2, 0),
    (12, 4, 4, 3),
    (13, 4, 8, 4),     # 1 + 1 + 1 + 1
])
def test_micro_batches_per_epoch(rows, window, micro, expected):
    assert micro_batches_per_epoch(rows, window, micro) == expected


def example(ids, label=3, truncated=False, response_cut=False):
    return {"input_ids": ids, "label": label, "truncated": truncated, "response_cut": response_cut}


def test_collate_right_pads():
    out = collate([example([5, 6, 7], 2), example([8], 4, True, True), example([9, 10], 1, True)], pad_id=99)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 99, 99], [9, 10, 99]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert out["input_ids"].dtype == torch.long and out["attention_mask"].dtype == torch.long
    assert out["labels"].tolist() == [2, 4, 1]
    assert out["real_tokens"] == 6 and out["padded_tokens"] == 9
    assert out["truncated"] == 2 and out["response_cut"] == 1


def test_collate_pad_to_multiple_of():
    out = collate([example([1, 2, 3]), example([4])], pad_id=0, pad_to_multiple_of=8)
    assert out["input_ids"].shape == (2, 8)
    assert out["input_ids"][0].tolist() == [1, 2, 3, 0, 0, 0, 0, 0]
    assert out["real_tokens"] == 4 and out["padded_tokens"] == 16
    exact = collate([example(list(range(1, 9)))], pad_id=0, pad_to_multiple_of=8)
    assert exact["input_ids"].shape == (1, 8)
    nine = collate([example(list(range(1, 10)))], pad_id=0, pad_to_multiple_of=8)
    assert nine["input_ids"].shape == (1, 16)


def test_padding_efficiency():
    lengths = [4, 4, 2, 2]
    assert padding_efficiency(lengths, [[0, 1], [2, 3]]) == pytest.approx(1.0)
    assert padding_efficiency(lengths, [[0, 2], [1, 3]]) == pytest.approx(12 / 16)
    assert padding_efficiency(lengths, [[0, 1], [2, 3]], pad_to=10) == pytest.approx(12 / 40)
    assert padding_efficiency([3, 5, 1], [[0, 1, 2]]) == pytest.approx(9 / 15)
    assert math.isnan(padding_efficiency([], []))


def test_satisfaction_calibration_fit_and_one_class_split():
    from wildreward.train.pipeline import fit_satisfaction_calibration

    rng = np.random.default_rng(0)
    label = rng.integers(1, 5, 400)
    reward = label + rng.normal(0, 0.5, 400)
    fit = fit_satisfaction_calibration(reward, label, 4)
    assert fit["n"] == 400 and fit["positives"] == int((label >= 3).sum()) and fit["a"] > 1
    assert 1 / (1 + np.exp(-(fit["a"] * 2.5 + fit["b"]))) == pytest.approx(0.5, abs=0.1)  # the boundary is ~2.5
    one_class = fit_satisfaction_calibration(reward[:5], np.ones(5, dtype=int), 4)
    assert "a" not in one_class and one_class["skipped"] and one_class["positives"] == 0
    # other scales: the upper half, without an odd scale's neutral middle
    assert fit_satisfaction_calibration(reward, label, 2)["positives"] == int((label >= 2).sum())
    assert fit_satisfaction_calibration(reward, label, 5)["target"] == "P(label >= 4)"


def test_satisfied_min_level():
    from wildreward.ordinal import SATISFIED_MIN_LEVEL, satisfied_min_level

    assert [satisfied_min_level(k) for k in (2, 3, 4, 5, 6)] == [2, 3, 3, 4, 4]
    assert satisfied_min_level(4) == SATISFIED_MIN_LEVEL == 3  # the paper's four levels


def test_validation_runs_its_passes_on_a_rank_without_held_out_rows(minilm_tok):
    # Fewer held-out rows than ranks leaves a rank with none; it must still run every forward pass (ZeRO-3 gathers
    # parameters collectively) on a filler batch, and report nothing.
    from wildreward.train.config import TrainConfig
    from wildreward.train.loop import Validation

    class Engine:
        def __init__(self):
            self.batch_sizes = []

        def eval_logits(self, batch):
            self.batch_sizes.append(len(batch["input_ids"]))
            return torch.zeros(len(batch["input_ids"]), 3)

    cfg = TrainConfig(batch={"eval_batch_size": 4})
    engine = Engine()
    # 9 rows over 2 ranks: at most 5 per rank, so ceil(5 / 4) = 2 passes each
    assert Validation(cfg, minilm_tok, [], rank=1, world=2, total_rows=9).run(engine, False, None) == {}
    assert engine.batch_sizes == [1, 1]


def test_a_checkpoint_resumes_only_under_the_plan_it_was_made_with():
    from wildreward.train.loop import resume_state

    plan = {"train_rows": 1000, "workers": 2, "micro_batch_size": 8, "grad_accum": 4, "length_group_size": 64,
            "seed": 0, "total_steps": 15}
    saved = {"step": 7, "epoch": 0, "micro_in_epoch": 28, "plan": dict(plan)}
    assert resume_state(saved, plan, "rm") == {"step": 7, "epoch": 0, "micro_in_epoch": 28}
    # micro-batch 28 of 8 rows is another place in the data with 16-row micro-batches
    with pytest.raises(RuntimeError, match=r"'micro_batch_size': \(8, 16\)"):
        resume_state(saved, {**plan, "micro_batch_size": 16}, "rm")
    older = {k: v for k, v in saved.items() if k != "plan"}  # a checkpoint from before plans were saved
    assert resume_state(older, plan, "rm")["step"] == 7
