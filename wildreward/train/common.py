"""What every Ray Train worker loop needs, whatever it trains: the RM trainer (:mod:`wildreward.train.loop`) and
online DPO (:mod:`wildreward.dpo.loop`) both build on it, and on the engines of :mod:`wildreward.train.engine`.

Collectives that also work in a single process (``all_reduce``, ``gather_objects``, ``barrier``), seeding and the
RNG states a checkpoint carries, the rank-0 metrics log (``MetricsLog``; ``read_metrics`` on the driver), peak
memory, and the checkpoint round trip: ``checkpoint_and_report`` saves the engine, the caller's position and every
rank's RNG states, then reports to Ray Train; ``restore_checkpoint`` loads all of them back.
"""
from __future__ import annotations

import json
import math
import pickle
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from wildreward import ray_compat as rc
from wildreward.storage import Location

# ---------------------------------------------------------------- collectives


def all_reduce(values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        # NCCL reduces only CUDA tensors (Ray Train's GPU process group has no CPU backend).
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
        t = t.to(device)
        dist.all_reduce(t, op=op)
    return t.tolist()


def gather_objects(obj: Any) -> list[Any]:
    if dist.is_initialized() and dist.get_world_size() > 1:
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------- seeding and RNG states


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's RNG states as a tensor and plain lists: what a weights-only ``torch.load`` reads back (numpy
    arrays and Python's state tuple as pickled objects would need a full unpickler)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def load_rng_state(path: Path) -> dict[str, Any] | None:
    """A rank's saved RNG states, loaded weights-only (a checkpoint file never runs code). None for a file in the
    format before that (pickled numpy state), which a weights-only load refuses: the run resumes without it."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        print(f"warning: {path.name}: RNG states in a format a weights-only load refuses; not restored",
              file=sys.stderr)
        return None


# ---------------------------------------------------------------- checkpoints


def checkpoint_and_report(engine, client_state: dict[str, Any], metrics: dict[str, Any], rank: int) -> None:
    """Every rank: the engine's checkpoint with ``client_state`` (where the run is), this rank's RNG states, then
    ``metrics`` and the checkpoint to Ray Train, which merges the ranks' directories into one checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        engine.save(Path(tmp), client_state)
        (Path(tmp) / "rng").mkdir(exist_ok=True)
        torch.save(rng_state(), Path(tmp) / "rng" / f"rank{rank}.pt")
        barrier()
        rc.report(metrics, checkpoint_dir=tmp)


def restore_checkpoint(engine, rank: int) -> dict[str, Any] | None:
    """The run's latest checkpoint, if it has one (a worker restart or a re-run): loaded into ``engine`` (weights,
    optimizer and schedule), this rank's RNG states restored when the checkpoint holds them; returns the client
    state it was saved with. None, and nothing changed, when there is no checkpoint."""
    with rc.restored_checkpoint() as ckpt:
        if ckpt is None:
            return None
        saved = engine.load(ckpt)  # loads once: optimizer state too
        rng_file = ckpt / "rng" / f"rank{rank}.pt"
        state = load_rng_state(rng_file) if rng_file.exists() else None
        if state is not None:
            set_rng_state(state)
        return saved


# ---------------------------------------------------------------- metrics


class MetricsLog:
    """Rank 0's metrics: ``metrics.jsonl`` (train and eval records), TensorBoard when installed, console lines.
    On resume, records after the restored step are dropped so the file has no duplicate steps."""

    def __init__(self, out_dir: Location, active: bool, resume_step: int):
        self.active, self.path, self.tb = active, out_dir / "metrics.jsonl", None
        self.lines: list[str] = []
        if not active:
            return
        out_dir.mkdir()
        if self.path.exists():
            self.lines = [line for line in self.path.read_text().splitlines()
                          if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in self.lines))
        if not out_dir.is_local:  # TensorBoard event files need a local disk
            return
        for module in ("torch.utils.tensorboard", "tensorboardX"):
            try:
                writer = __import__(module, fromlist=["SummaryWriter"]).SummaryWriter
                self.tb = writer(str(out_dir / "tensorboard"), purge_step=resume_step + 1)
                break
            except ImportError:
                continue

    def write(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        if self.path.is_local:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        else:  # object stores cannot append: rewrite the (small) file
            self.lines.append(json.dumps(record))
            self.path.write_text("".join(line + "\n" for line in self.lines))
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch") and math.isfinite(value):
                    self.tb.add_scalar(f"{record['kind']}/{key}", value, record["step"])
            self.tb.flush()

    def say(self, msg: str) -> None:
        if self.active:  # not print(): Ray Train patches it and the line would reach the driver twice
            sys.stdout.write(f"[train] {msg}\n")
            sys.stdout.flush()


def read_metrics(out_dir: str | Path | Location) -> list[dict[str, Any]]:
    """The records a :class:`MetricsLog` wrote to ``out_dir``."""
    text = (Location.parse(out_dir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
