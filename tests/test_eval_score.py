"""Evaluation pieces without Ray: baselines, deduplication, the endpoint scoring path (mock service), exclusion of
failed pairs from the metrics, config checks and a clear error for a bad model directory."""
import functools
import json

import httpx
import numpy as np
import pytest

from wildreward.config import ConfigError, load_config
from wildreward.eval import score as score_mod
from wildreward.eval.config import EvalConfig
from wildreward.eval.pipeline import run_eval, seeded_subset
from wildreward.eval.report import accuracy_result, rm_bench_result
from wildreward.eval.score import deduplicate, length_scores, random_scores, score_examples
from wildreward.serve.client import RewardClient, RewardServiceError

EXAMPLES = [
    {"history": [], "query": "q1", "response": "short"},
    {"history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "query": "q1",
     "response": "a longer reply"},
    {"history": None, "query": "q1", "response": "short"},  # same example as the first (no history)
    {"history": [], "query": "q2", "response": None},       # malformed: no scorer can read it
]


def test_deduplicate_keeps_first_seen_order():
    unique, where = deduplicate(EXAMPLES)
    assert len(unique) == 3
    assert where == [0, 1, 0, 2]


def test_baselines_score_each_example_and_fail_on_malformed_ones():
    length = length_scores(EXAMPLES)
    assert length.scores[:3] == [5.0, 14.0, 5.0]
    assert length.scores[3] is None and "TypeError" in length.errors[3]
    first, again = random_scores(EXAMPLES, seed=3), random_scores(EXAMPLES, seed=3)
    assert first == again
    assert first.scores[0] == first.scores[2] != first.scores[1]  # a repeated example keeps its score
    assert first.scores[3] is None and first.errors[3]
    assert random_scores(EXAMPLES, seed=4).scores[0] != first.scores[0]


def test_seeded_subset_is_deterministic_and_in_file_order():
    records = list(range(100))
    a = seeded_subset(records, 10, 0, "llmbar")
    assert a == seeded_subset(records, 10, 0, "llmbar") == sorted(a) and len(a) == 10
    assert a != seeded_subset(records, 10, 0, "xstest")
    assert seeded_subset(records, 200, 0, "llmbar") == records


def mock_service(seen: list):
    """/v1/score rewards len(response) / 10; a request containing a response with "BAD" is rejected (422)."""
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/info":
            return httpx.Response(200, json={"model_dir": "mock"})
        items = json.loads(request.content)["items"]
        seen.append(len(items))
        if any("BAD" in it["response"] for it in items):
            return httpx.Response(422, json={"detail": "bad item"})
        return httpx.Response(200, json={"results": [{"reward": len(it["response"]) / 10, "level_probs": []}
                                                     for it in items]})
    return httpx.MockTransport(handle)


def test_endpoint_scores_distinct_examples_and_isolates_a_bad_one(monkeypatch):
    seen = []
    monkeypatch.setattr(score_mod, "RewardClient", functools.partial(RewardClient, transport=mock_service(seen)))
    examples = EXAMPLES[:3] + [{"history": [], "query": "q3", "response": "BAD reply"}]
    scored = score_examples(examples, endpoint="http://rm.test", batch_size=8)
    assert scored.scores[:3] == [0.5, 1.4, 0.5]
    assert scored.scores[3] is None and "422" in scored.errors[3]
    assert seen == [3, 1, 1, 1]  # the 3 distinct examples in one request, then one by one after its 422


@pytest.mark.slow  # the client's retries and backoff
def test_unreachable_endpoint_is_a_clear_error(monkeypatch):
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(score_mod, "RewardClient",
                        functools.partial(RewardClient, transport=httpx.MockTransport(refuse)))
    with pytest.raises(RewardServiceError, match="not reachable"):
        score_examples(EXAMPLES[:1], endpoint="http://rm.test")


def test_pairs_with_a_missing_score_are_left_out_and_counted():
    pairs = [{"subset": "a"}, {"subset": "a"}, {"subset": "b"}]
    res = accuracy_result(pairs, np.array([2.0, np.nan, 1.0]), np.array([1.0, 3.0, 1.0]), "llmbar", 0.0)
    assert (res["scored"], res["failed"]) == (2, 1)
    assert res["overall"]["accuracy"] == 0.75 and res["overall"]["ties"] == 1
    assert res["subsets"]["a"]["n"] == 1
    nothing = accuracy_result(pairs, np.full(3, np.nan), np.ones(3), "llmbar", 0.0)
    assert nothing == {"scored": 0, "failed": 3}


def test_rm_bench_prompt_with_a_missing_reply_is_left_out():
    # two prompts, nine flattened pairs each (pair 3i + j: chosen i vs rejected j); chosen always wins
    pairs = [{"subset": "chat"}] * 9 + [{"subset": "code"}] * 9
    chosen, rejected = np.full(18, 2.0), np.full(18, 1.0)
    chosen[9 + 3 * 1] = np.nan  # chosen variant 1 of the second prompt
    res = rm_bench_result(pairs, chosen, rejected, 0.0)
    assert (res["scored"], res["failed"]) == (1, 1)
    assert res["overall"]["avg"] == 1.0 and list(res["subsets"]) == ["chat"]


def test_config_rejects_bad_benchmark_settings():
    with pytest.raises(ConfigError, match="unknown benchmark"):
        load_config(EvalConfig, None, ["benchmarks=[rm_bench, nope]"])
    # every benchmark has a default location (an absent file is reported as not evaluated), so this loads
    assert load_config(EvalConfig, None, ["benchmarks=[rewardbench]"]).benchmarks == ["rewardbench"]
    with pytest.raises(ConfigError, match="must be below"):
        load_config(EvalConfig, None, ["negative_max_label=3"])
    cfg = load_config(EvalConfig, None, ["benchmarks=[rewardbench]", "paths.rewardbench=/x/rb.parquet"])
    assert cfg.paths == {"rewardbench": "/x/rb.parquet"}


def test_bad_model_dir_fails_before_any_work(tmp_path):
    cfg = EvalConfig(model_dir=str(tmp_path / "missing"), output_dir=str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="not a wildreward reward model"):
        run_eval(cfg)
    assert not (tmp_path / "out").exists()
    cfg = EvalConfig(model_dir=str(tmp_path), second_model_dir=str(tmp_path / "other"), endpoint="http://x")
    with pytest.raises(FileNotFoundError, match="other"):
        run_eval(cfg)
