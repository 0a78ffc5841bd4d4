"""/health and Serve's replica check run the model on a tiny fixed text: a replica whose model raises, gives NaN
or hangs reports unhealthy. Tested on the deployment class itself, without starting Ray Serve."""
import asyncio
import time
from types import SimpleNamespace

import pytest
import torch
from fastapi import HTTPException

from tests.conftest import build_tiny_rm
from wildreward.rm import RewardModel
from wildreward.serve.app import HealthProbe, RewardServer


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    return build_tiny_rm(tmp_path_factory)


@pytest.fixture
def rm(rm_dir):
    return RewardModel(rm_dir)


def server(rm, timeout_s=5.0):
    """The class Serve would run, with only what the health routes use (its __init__ is Serve's wrapper's)."""
    (cls,) = [c for c in RewardServer.func_or_class.__mro__ if "check_health" in vars(c)]  # not Serve's wrapper
    replica = object.__new__(cls)
    replica.probe = HealthProbe(rm, timeout_s)
    return replica


def run(coro):
    return asyncio.run(coro)


class Broken(torch.nn.Module):
    """Stands in for the model's backbone: raises, gives NaN logits, or blocks for a while."""

    def __init__(self, mode, seconds=0.0):
        super().__init__()
        self.mode, self.seconds, self.calls = mode, seconds, 0

    def forward(self, **inputs):
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError("CUDA error: device-side assert triggered")
        time.sleep(self.seconds)
        return SimpleNamespace(logits=torch.full((1, 3), float("nan") if self.mode == "nan" else 0.0))


def test_a_working_model_is_healthy(rm):
    replica = server(rm)
    assert run(replica.health()) == {"status": "ok"}
    assert run(replica.check_health()) is None


@pytest.mark.parametrize("mode, seconds, error", [("raise", 0, "RuntimeError"), ("nan", 0, "FloatingPointError"),
                                                  ("hang", 1.5, "TimeoutError")])
def test_a_broken_model_is_unhealthy(rm, mode, seconds, error):
    rm.model.backbone = backbone = Broken(mode, seconds)
    replica = server(rm, timeout_s=0.3)
    with pytest.raises(HTTPException) as caught:
        run(replica.health())
    assert caught.value.status_code == 503 and error in caught.value.detail
    with pytest.raises(Exception) as caught:
        run(replica.check_health())
    assert type(caught.value).__name__ == error
    assert backbone.calls >= 1  # the model really ran


def test_checks_share_one_forward_pass_and_a_hung_one_is_not_restarted(rm):
    rm.model.backbone = backbone = Broken("hang", 0.6)
    probe = HealthProbe(rm, timeout_s=0.2)

    async def checks():
        results = await asyncio.gather(*(probe.check() for _ in range(3)), return_exceptions=True)
        again = await asyncio.gather(probe.check(), return_exceptions=True)  # the first is still running
        await asyncio.sleep(0.6)
        backbone.seconds = 0  # the model answers again
        return results + again, await probe.check()  # the hung pass ended: this check runs a new one

    results, last = run(checks())
    assert all(isinstance(r, TimeoutError) for r in results) and last is None
    assert backbone.calls == 2
