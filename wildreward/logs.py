"""Console lines of the driver-side stages: ``log = stage_logger("train")``, then ``log("msg")`` prints
``[train] msg`` and flushes (Ray's log streaming and ``tee`` show it at once)."""
from __future__ import annotations

from typing import Callable


def stage_logger(stage: str) -> Callable[[str], None]:
    def log(msg: str) -> None:
        print(f"[{stage}] {msg}", flush=True)

    return log
