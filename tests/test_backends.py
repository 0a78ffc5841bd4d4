"""Annotation backends: transformers on a tiny random Llama, HTTP against a local stub server, vLLM on SmolLM2."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from wildreward.extract.annotate import RATINGS, FeedbackAnnotator
from wildreward.extract.backends import (HttpBackend, Result, make_backend, render_prompts, run_per_row_on_failure,
                                        shared_prefix_length)
from wildreward.http_retry import parse_retry_after
from wildreward.extract.config import AnnotatorConfig, HttpConfig
from wildreward.testing.openai_stub import StubOpenAI

CHAT = [{"role": "user", "content": "Say hello."}]


# ---------------------------------------------------------------- transformers


def test_hf_choice_probs_ignore_left_padding(tiny_lm):
    backend = make_backend(AnnotatorConfig(backend="hf", model=tiny_lm, batch_size=4), RATINGS)
    short = [{"role": "user", "content": "Rate this."}]
    long = [{"role": "user", "content": "Rate this much longer message, padded with many more words " * 5}]
    alone = backend.choice_probs([short], RATINGS)[0].probs
    batched = backend.choice_probs([long, short, long], RATINGS)
    assert batched[1].probs == pytest.approx(alone, abs=1e-4)
    for result in batched:
        assert result.error is None and len(result.probs) == 5 and sum(result.probs) == pytest.approx(1.0)


def full_forward_probs(backend, conv) -> list[float]:
    """Choice probabilities from one plain forward pass over the whole prompt: no padding, no cached prefix."""
    import torch

    ids = render_prompts(backend.tokenizer, [conv])[0]
    with torch.inference_mode():
        logits = backend.model(input_ids=torch.tensor([ids])).logits[0, -1]
    return torch.softmax(logits[backend.choice_ids(RATINGS)].float(), dim=-1).tolist()


def test_shared_prefix_length_leaves_every_prompt_a_token():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 6]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter prompt keeps its last token
    assert shared_prefix_length([[1, 2, 3]]) == 2
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([]) == 0


def test_hf_passes_respect_rows_and_padded_tokens(tiny_lm, monkeypatch):
    backend = make_backend(AnnotatorConfig(backend="hf", model=tiny_lm, batch_size=3, batch_tokens=300), RATINGS)
    instructions = "Rate the reply below on a scale from one to five, where five is best. " * 3
    convs = [[{"role": "user", "content": instructions + "word " * n}] for n in (0, 200, 5, 0, 120, 10, 1, 2)]
    prompts = render_prompts(backend.tokenizer, convs)
    shared = shared_prefix_length(prompts)
    assert shared > backend.MIN_PREFIX  # the instructions are long enough to be cached
    passes = []
    choice_batch = backend._choice_batch
    monkeypatch.setattr(backend, "_choice_batch",
                        lambda batch, ids, prefix: passes.append((batch, prefix)) or choice_batch(batch, ids, prefix))
    results = backend.choice_probs(convs, RATINGS)
    assert sorted(len(ids) for batch, _ in passes for ids in batch) == sorted(map(len, prompts))  # each one once
    for batch, prefix in passes:
        assert len(prefix) == shared and all(list(ids[:shared]) == list(prefix) for ids in batch)
        own = [len(ids) - shared for ids in batch]  # the tokens this pass computes
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(own) <= 300
    assert len(passes[-1][0]) == 1 and len(passes[-1][0][0]) - shared > 300 / 2  # the longest prompt ran alone
    for result, conv in zip(results, convs):  # input order restored; padding and the cached prefix change nothing
        assert result.probs == pytest.approx(full_forward_probs(backend, conv), abs=1e-4)
    assert len(backend._prefixes) == 1
    backend.choice_probs(convs[:3], RATINGS)
    assert len(backend._prefixes) == 1  # the next call with the same instructions reuses the cached prefix


def test_hf_short_shared_prefix_is_not_cached(tiny_lm):
    backend = make_backend(AnnotatorConfig(backend="hf", model=tiny_lm, batch_size=4), RATINGS)
    convs = [CHAT, [{"role": "user", "content": "Rate this."}]]  # only the chat template's header is shared
    assert shared_prefix_length(render_prompts(backend.tokenizer, convs)) < backend.MIN_PREFIX
    results = backend.choice_probs(convs, RATINGS)
    assert not backend._prefixes
    for result, conv in zip(results, convs):
        assert result.probs == pytest.approx(full_forward_probs(backend, conv), abs=1e-4)


def test_hf_rejects_multi_token_choices_at_construction(tiny_lm):
    with pytest.raises(ValueError, match="single-token"):
        make_backend(AnnotatorConfig(backend="hf", model=tiny_lm), ["yes", "definitely not"])


def test_hf_too_long_prompt_is_a_row_error(tiny_lm):
    backend = make_backend(AnnotatorConfig(backend="hf", model=tiny_lm, max_tokens=4, temperature=0.0))
    huge = [{"role": "user", "content": "word " * 5000}]  # over the 4096 positions
    results = backend.generate([CHAT, huge, CHAT])
    assert results[1].error.startswith("prompt too long")
    assert results[0].text is not None and results[0] == results[2]  # greedy: same prompt, same text


def test_one_failing_prompt_does_not_fail_the_batch():
    def run(items):
        if "bad" in items:
            raise RuntimeError("engine choked")
        return [Result(text=item.upper()) for item in items]

    results = run_per_row_on_failure(run, ["a", "bad", "c"])
    assert [r.text for r in results] == ["A", None, "C"]
    assert results[1].error == "RuntimeError: engine choked"
    assert run_per_row_on_failure(run, ["bad"])[0].error == "RuntimeError: engine choked"


def test_result_holds_value_or_error():
    with pytest.raises(ValueError):
        Result()
    with pytest.raises(ValueError):
        Result(text="x", error="y")


# ---------------------------------------------------------------- HTTP stub server


@pytest.fixture
def stub():
    server = StubOpenAI()
    server.url = server.start()
    yield server
    server.stop()


def http_backend(stub, **http) -> HttpBackend:
    cfg = AnnotatorConfig(backend="http", model="stub-model", temperature=0.5, max_tokens=32,
                          http=HttpConfig(base_url=stub.url, **{"api_key_env": "WR_TEST_KEY", **http}))
    backend = make_backend(cfg)
    backend.retry.backoff_s = 0.01
    return backend


def user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def test_http_chat_sends_key_and_extra_body(stub, monkeypatch):
    monkeypatch.setenv("WR_TEST_KEY", "sekret")
    backend = http_backend(stub, extra_body={"top_k": 5})
    results = backend.generate([user("hi"), user("there")])
    backend.close()
    assert [r.text for r in results] == [stub.text] * 2
    request = stub.requests[0]
    assert request["auth"] == "Bearer sekret"
    assert request["body"]["model"] == "stub-model" and request["body"]["top_k"] == 5
    assert request["body"]["max_tokens"] == 32 and request["body"]["temperature"] == 0.5


def test_http_choice_probs_from_top_logprobs(stub):
    backend = http_backend(stub)
    good, missing = backend.choice_probs([user("rate"), user("NOCHOICE")], RATINGS)
    backend.close()
    body = stub.requests[0]["body"]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    import math
    weights = [math.exp(-4.0), 0, 0, math.exp(-1.5), math.exp(-0.5) + math.exp(-2.0)]  # "5" and " 5" merge
    assert good.probs == pytest.approx([w / sum(weights) for w in weights])
    assert missing.probs is None and "no choice" in missing.error


def test_http_retries_500_then_succeeds(stub):
    backend = http_backend(stub)
    results = backend.generate([user("FAIL500ONCE"), user("fine")])
    backend.close()
    assert [r.text for r in results] == [stub.text] * 2
    assert stub.count("FAIL500ONCE") == 2


def test_http_honours_retry_after(stub):
    backend = http_backend(stub)
    start = time.monotonic()
    (result,) = backend.generate([user("RATE429ONCE")])
    backend.close()
    assert result.text == stub.text and stub.count("RATE429ONCE") == 2
    assert time.monotonic() - start >= 0.95  # waited the server's 1 s, not the 10 ms backoff


def test_http_400_is_not_retried(stub):
    backend = http_backend(stub, max_retries=5)
    bad, good = backend.generate([user("BAD400"), user("fine")])
    backend.close()
    assert stub.count("BAD400") == 1
    assert bad.error.startswith("http 400: ") and "max_tokens is too large" in bad.error
    assert good.text == stub.text


def test_http_timeout_gives_up_after_retries(stub):
    backend = http_backend(stub, timeout_s=0.3, max_retries=1)
    slow, fine = backend.generate([user("SLOW"), user("fine")])
    backend.close()
    assert slow.error.startswith("backend_unavailable: timeout") and "2 attempts" in slow.error  # retried on resume
    assert stub.count("SLOW") == 2 and fine.text == stub.text


def test_http_bounds_requests_in_flight(stub):
    stub.delay = 0.1
    backend = http_backend(stub, concurrency=3)
    results = backend.generate([user(f"row {i}") for i in range(20)])
    backend.close()
    assert all(r.text == stub.text for r in results)
    assert 2 <= stub.max_in_flight <= 3


def test_http_works_inside_a_running_event_loop(stub):
    backend = http_backend(stub)

    async def caller():  # e.g. an async Ray actor calling the synchronous API
        return backend.generate([user("hi")])

    (result,) = asyncio.run(caller())
    backend.close()
    assert result.text == stub.text


def test_http_connection_refused_is_a_row_error():
    cfg = AnnotatorConfig(backend="http", http=HttpConfig(base_url="http://127.0.0.1:9/v1", max_retries=1))
    backend = make_backend(cfg)
    backend.retry.backoff_s = 0.01
    (result,) = backend.generate([CHAT])
    backend.close()
    assert result.error.startswith("backend_unavailable: connection error")


@pytest.mark.parametrize("mode", ["constrained", "freeform"])
def test_feedback_annotator_over_http(stub, mode):
    cfg = AnnotatorConfig(backend="http", mode=mode, http=HttpConfig(base_url=stub.url))
    annotator = FeedbackAnnotator(cfg)
    rows = [{"query": "Write a haiku about rain, please.", "response": "Soft rain on the roof...",
             "feedback": "Thanks, that is lovely!"},
            {"query": "BAD400", "response": "r", "feedback": "f"}]
    ok, bad = annotator(rows)
    annotator.backend.close()
    assert ok["label"] == 5 and ok["error"] is None
    if mode == "constrained":
        assert len(ok["label_probs"]) == 5 and ok["annotation"].startswith("p=[")
    else:
        assert ok["label_probs"] is None and ok["annotation"] == stub.text
    assert bad["label"] is None and bad["error"].startswith("http 400")


@pytest.mark.parametrize("value, expected", [("2", 2.0), ("0", 0.0), (None, None), ("soon", None),
                                             ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


# ---------------------------------------------------------------- vLLM (real SmolLM2, in a subprocess)

VLLM_SCRIPT = """
import json, os
from wildreward.extract.annotate import FeedbackAnnotator
from wildreward.extract.backends import make_backend
from wildreward.extract.config import AnnotatorConfig

if __name__ == "__main__":  # vLLM spawns its EngineCore by re-importing this module
    rows = json.load(open(os.environ["WR_ROWS"]))
    cfg = AnnotatorConfig(backend="vllm", mode="constrained", max_tokens=32, max_field_chars=300,
                          engine_kwargs={"max_model_len": 1024})
    backend = make_backend(cfg)
    constrained = FeedbackAnnotator(cfg, backend)(rows)
    long_row = dict(rows[0], response="word " * 3000)
    too_long = FeedbackAnnotator(cfg.model_copy(update={"max_field_chars": 20000}), backend)([long_row, rows[0]])
    freeform = FeedbackAnnotator(cfg.model_copy(update={"mode": "freeform"}), backend)(rows)
    hf = FeedbackAnnotator(cfg.model_copy(update={"backend": "hf"}))(rows)
    print("RESULT " + json.dumps({"constrained": constrained, "too_long": too_long, "freeform": freeform, "hf": hf}))
"""


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_vllm_backend_with_smollm2(tmp_path):
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    from tests.test_annotate import real_turns

    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(real_turns(3)))
    script = tmp_path / "run_vllm.py"
    script.write_text(textwrap.dedent(VLLM_SCRIPT))
    env = dict(os.environ, WR_ROWS=str(rows_file), VLLM_CPU_KVCACHE_SPACE="1")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=280)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    for row, hf_row in zip(out["constrained"], out["hf"]):
        assert row["error"] is None and row["label"] in range(1, 6)
        assert sum(row["label_probs"]) == pytest.approx(1.0, abs=1e-3)
        # Same model, same prompt: vLLM's renormalised logprobs match the transformers forward pass.
        assert row["label_probs"] == pytest.approx(hf_row["label_probs"], abs=0.03)
    assert out["too_long"][0]["error"].startswith("prompt too long") and out["too_long"][1]["error"] is None
    for row in out["freeform"]:
        assert row["label_probs"] is None and row["annotation"] is not None
        assert (row["label"] is None) == (row["error"] is not None)
