"""Checkpoints and RNG states load weights-only: they round-trip, and a file holding any other pickled object is
refused without running it."""
import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from wildreward.train import common
from wildreward.train import engine as engine_mod
from wildreward.train.config import TrainConfig

RAN = []


def record(marker):
    RAN.append(marker)
    return marker


class Evil:
    """Unpickling it calls ``record``: a full unpickler runs that, a weights-only one must refuse."""

    def __reduce__(self):
        return record, ("ran",)


@pytest.fixture
def evil_file(tmp_path):
    RAN.clear()
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "client_state": Evil()}, path)
    assert torch.load(path, weights_only=False) and RAN == ["ran"]  # the file does what it says
    RAN.clear()
    return path


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    common.seed_all(3)
    draws()
    random.gauss(0, 1)  # a cached Gaussian is part of Python's state
    torch.save(common.rng_state(), tmp_path / "rank0.pt")
    expected = [draws() for _ in range(3)]
    common.seed_all(99)
    common.set_rng_state(torch.load(tmp_path / "rank0.pt", weights_only=True))
    assert [draws() for _ in range(3)] == expected
    common.set_rng_state(common.load_rng_state(tmp_path / "rank0.pt"))
    assert [draws() for _ in range(3)] == expected


def test_rng_file_with_a_pickled_object_is_refused(evil_file, capsys):
    assert common.load_rng_state(evil_file) is None
    assert RAN == [] and "not restored" in capsys.readouterr().err
    # the format before weights-only loads (a numpy array in it) is refused the same way, and resuming goes on
    old = evil_file.parent / "old.pt"
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}, old)
    assert common.load_rng_state(old) is None


def ddp_engine(monkeypatch, seed):
    from wildreward.train.config import DistConfig, OptimConfig

    monkeypatch.setattr("wildreward.ray_compat.prepare_ddp_model", lambda model: model)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
    return engine_mod.DDPEngine(model, DistConfig(strategy="ddp", use_gpu=False), OptimConfig(), 1, 10,
                                torch.device("cpu"))


def test_ddp_checkpoint_round_trips_weights_only(monkeypatch, tmp_path):
    trained = ddp_engine(monkeypatch, 0)
    trained.backward_micro(lambda model: model(torch.randn(2, 4)).sum())
    trained.save(tmp_path, {"step": 1, "epoch": 0, "plan": {"train_rows": 10, "seed": 0}})
    fresh = ddp_engine(monkeypatch, 1)
    assert fresh.load(tmp_path) == {"step": 1, "epoch": 0, "plan": {"train_rows": 10, "seed": 0}}
    for a, b in zip(trained.full_state_dict().values(), fresh.full_state_dict().values()):
        assert torch.equal(a, b)
    moments = [e.optimizer.state_dict()["state"][0]["exp_avg"] for e in (trained, fresh)]
    assert moments[0].abs().sum() > 0 and moments[0].equal(moments[1])
    assert fresh.lr() == trained.lr()
    exported = engine_mod.consolidated_state_dict(tmp_path, TrainConfig.model_validate({"dist": {"strategy": "ddp"}}))
    assert all(torch.equal(exported[k], v) for k, v in trained.full_state_dict().items())


def test_checkpoint_loaders_refuse_a_pickled_object(evil_file, tmp_path):
    evil_file.rename(tmp_path / "ddp.pt")
    with pytest.raises(pickle.UnpicklingError):
        engine_mod.consolidated_state_dict(tmp_path, TrainConfig.model_validate({"dist": {"strategy": "ddp"}}))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ddp.pt").rename(tmp_path / "ds" / "mp_rank_00_model_states.pt")
    with pytest.raises(pickle.UnpicklingError):
        engine_mod.consolidated_state_dict(tmp_path, TrainConfig.model_validate(
            {"dist": {"strategy": "deepspeed", "zero_stage": 0, "use_gpu": False}}))
    assert RAN == []


def test_deepspeed_loads_are_weights_only_while_it_reads(evil_file, tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler

    original = torch.load
    torch.save({"loss_scaler": LossScaler(1.0), "w": torch.ones(2)}, tmp_path / "optim.pt")
    with engine_mod.deepspeed_loads_weights_only():
        assert torch.load is not original
        # what DeepSpeed calls: weights_only=False is overridden; its own data classes still load
        assert torch.load(tmp_path / "optim.pt", map_location="cpu", weights_only=False)["w"].equal(torch.ones(2))
        with pytest.raises(pickle.UnpicklingError):
            torch.load(evil_file, map_location="cpu", weights_only=False)
    assert torch.load is original and RAN == []
    with pytest.raises(RuntimeError), engine_mod.deepspeed_loads_weights_only():
        raise RuntimeError("a failed load")
    assert torch.load is original


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deepspeed_checkpoints_round_trip_weights_only(tmp_path):
    """A real DeepSpeed engine (one gloo process, in a subprocess so this one keeps no process group): ZeRO 0 and 2
    checkpoints load back into a fresh engine and export through the weights-only loads."""
    script = textwrap.dedent(f"""
        import os, sys, torch
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29641", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        sys.path.insert(0, {str(REPO)!r})
        torch.distributed.init_process_group("gloo")
        from wildreward.train.config import DistConfig, OptimConfig, TrainConfig
        from wildreward.train.engine import DeepSpeedEngine, consolidated_state_dict
        def build(dist, seed):
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
            return DeepSpeedEngine(model, dist, OptimConfig(), 2, 1, 10)
        for stage in (0, 2):
            dist = DistConfig(strategy="deepspeed", zero_stage=stage, use_gpu=False, precision="fp32")
            trained = build(dist, 0)
            trained.backward_micro(lambda model: model(torch.randn(2, 4)).sum())
            trained.save({str(tmp_path)!r} + f"/s{{stage}}", {{"step": 1}})
            fresh = build(dist, 1)
            assert fresh.load({str(tmp_path)!r} + f"/s{{stage}}")["step"] == 1
            want = trained.full_state_dict()
            assert all(torch.equal(want[k], v) for k, v in fresh.full_state_dict().items())
            got = consolidated_state_dict({str(tmp_path)!r} + f"/s{{stage}}",
                                          TrainConfig.model_validate({{"dist": dist.model_dump()}}))
            assert all(torch.allclose(got[k], v.float()) for k, v in want.items())
            assert torch.load is torch.serialization.load
        print("round trips ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=500, cwd=REPO)
    assert proc.returncode == 0 and "round trips ok" in proc.stdout, proc.stderr[-3000:]
