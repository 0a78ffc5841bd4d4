"""The reward-model client against scripted HTTP replies: retries only transient failures, honours Retry-After,
checks result counts, never returns a value the server did not send."""
import asyncio

import httpx
import pytest

from wildreward.http_retry import RetryableError, RetryPolicy
from wildreward.serve.client import AsyncRewardClient, RewardClient, RewardServiceError


def scripted(replies):
    """A transport answering each request with the next (status, json, headers) and recording the bodies."""
    seen = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body, headers = replies.pop(0) if replies else (500, {"detail": "script exhausted"}, {})
        if isinstance(body, Exception):
            raise body
        return httpx.Response(status, json=body, headers=headers)

    return httpx.MockTransport(handle), seen


def client(transport, **kwargs):
    c = RewardClient("http://rm.test", transport=transport, **kwargs)
    c._client.retry.backoff_s = 0.001
    return c


def test_splits_requests_and_keeps_order():
    import json

    def handle(request):
        texts = json.loads(request.content)["query"]
        return httpx.Response(200, json={"rewards": [float(t) for t in texts]})

    with client(httpx.MockTransport(handle), texts_per_request=3, concurrency=2) as rm:
        assert rm.get_rewards([str(i) for i in range(10)]) == [float(i) for i in range(10)]
        assert rm.retries == 0


@pytest.mark.parametrize("failure", [
    (503, {"detail": "overloaded"}, {"retry-after": "0"}),
    (429, {"detail": "slow down"}, {}),
    (500, {"detail": "model failure, error id abc"}, {}),
    (200, httpx.ReadTimeout("slow"), {}),
    (200, httpx.ConnectError("refused"), {}),
])
def test_transient_failures_are_retried(failure):
    transport, seen = scripted([failure, failure, (200, {"rewards": [3.5]}, {})])
    with client(transport) as rm:
        assert rm.get_rewards(["t"]) == [3.5]
        assert rm.retries == 2 and len(seen) == 3


def test_client_errors_are_not_retried():
    transport, seen = scripted([(413, {"detail": "too many texts"}, {})])
    with client(transport) as rm, pytest.raises(RewardServiceError, match="413.*too many texts"):
        rm.get_rewards(["t"])
    assert len(seen) == 1


def test_gives_up_after_max_retries_without_inventing_a_reward():
    transport, seen = scripted([(503, {"detail": "down"}, {})] * 3)
    with client(transport, max_retries=2) as rm, pytest.raises(RewardServiceError, match="gave up after 3 attempts"):
        rm.get_rewards(["t"])
    assert len(seen) == 3


@pytest.mark.parametrize("body", [{"rewards": [1.0]}, {"rewards": [1.0, 2.0, 3.0]}, {"scores": [1.0, 2.0]},
                                  ["not", "a", "dict"]])
def test_result_count_is_checked(body):
    transport, _ = scripted([(200, body, {})])
    with client(transport) as rm, pytest.raises(RewardServiceError, match="sent 2 inputs"):
        rm.get_rewards(["a", "b"])


@pytest.mark.parametrize("reward", ["null", "true", '"3.5"', "NaN", "-Infinity"])  # as the JSON reply spells it
def test_a_reward_that_is_not_a_finite_number_is_an_error(reward):
    reply = httpx.Response(200, content=f'{{"rewards": [{reward}]}}'.encode(),
                           headers={"content-type": "application/json"})
    with client(httpx.MockTransport(lambda request: reply)) as rm, \
            pytest.raises(RewardServiceError, match="not a finite number"):
        rm.get_rewards(["a"])


@pytest.mark.parametrize("result", [1, "x", {"reward": None, "level_probs": [1.0]}, {"reward": 2.0},
                                    {"reward": False, "level_probs": [1.0]},
                                    {"reward": 2.0, "level_probs": [0.5, "0.5"]}])
def test_malformed_score_results_are_errors(result):
    good = {"reward": 2.5, "level_probs": [0.25, 0.25, 0.25, 0.25]}
    transport, _ = scripted([(200, {"results": [good, result]}, {})])
    with client(transport) as rm, pytest.raises(RewardServiceError, match="malformed result"):
        rm.score([{"query": "q", "response": "r"}] * 2)
    transport, _ = scripted([(200, {"results": [good, good]}, {})])
    with client(transport) as rm:
        assert rm.score([{"query": "q", "response": "r"}] * 2) == [good, good]


def test_a_bad_url_fails_at_once():
    with RewardClient("localhost:8000") as rm, pytest.raises(RewardServiceError, match="UnsupportedProtocol") as err:
        rm.get_rewards(["t"])
    assert "gave up" not in str(err.value) and rm.retries == 0


def test_info_is_retried_and_reports_errors_like_scoring():
    transport, seen = scripted([(503, {"detail": "starting"}, {}), (200, {"model_dir": "m"}, {})])
    with client(transport) as rm:
        assert rm.info() == {"model_dir": "m"} and rm.retries == 1
    assert [r.method for r in seen] == ["GET", "GET"]
    transport, _ = scripted([(404, {"detail": "Not Found"}, {})])
    with client(transport) as rm, pytest.raises(RewardServiceError, match="GET /v1/info: http 404"):
        rm.info()


def test_retry_after_waits_are_spread_and_never_zero():
    policy = RetryPolicy(backoff_s=0.5)
    told = [policy.delay(0, RetryableError("busy", wait_s=1.0)) for _ in range(200)]
    assert min(told) >= 1.0 and max(told) <= 1.5 and max(told) - min(told) > 0.2  # not all at the same moment
    zero = [policy.delay(2, RetryableError("busy", wait_s=0.0)) for _ in range(200)]
    assert min(zero) >= 0.5 * 0.5 * 4  # a Retry-After of 0 still backs off exponentially
    assert max(policy.delay(30, RetryableError("busy", wait_s=1e9)) for _ in range(20)) == policy.max_wait_s


def test_retry_after_is_honoured():
    transport, _ = scripted([(503, {"detail": "busy"}, {"retry-after": "0.3"}), (200, {"rewards": [2.0]}, {})])

    async def timed():
        async with AsyncRewardClient("http://rm.test", transport=transport) as rm:
            loop = asyncio.get_running_loop()
            start = loop.time()
            rewards = await rm.get_rewards(["t"])
            return rewards, loop.time() - start

    rewards, elapsed = asyncio.run(timed())
    assert rewards == [2.0] and elapsed >= 0.3


def test_concurrency_is_bounded():
    import json
    import threading
    import time

    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    async def handle(request):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        with lock:
            state["now"] -= 1
        return httpx.Response(200, json={"rewards": [0.0] * len(json.loads(request.content)["query"])})

    async def run():
        async with AsyncRewardClient("http://rm.test", transport=httpx.MockTransport(handle), concurrency=3,
                                     texts_per_request=1) as rm:
            return await rm.get_rewards(["t"] * 12)

    start = time.monotonic()
    assert len(asyncio.run(run())) == 12
    assert state["peak"] == 3 and time.monotonic() - start >= 4 * 0.02
