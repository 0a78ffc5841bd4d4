"""Every Ray call the library makes, in one place (the Ray API churns: Train V2, `compute=` vs `concurrency=`...).

Pinned to Ray 2.60. Stage code builds plain Python callables; this module turns them into Ray Data operators.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import pyarrow as pa

# Loopback-only local clusters, no token file, no usage reporting: the documented dev/CI setup (platform.md §2).
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                 "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster of a ``ray job submit`` (RAY_ADDRESS set) or start a private local one."""
    import ray

    if ray.is_initialized():
        return
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    # Actor-pool stages log one line per block otherwise; progress bars carry the information.
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True


def from_items(items: list[dict]):
    import ray

    return ray.data.from_items(items, override_num_blocks=max(1, len(items)))


def read_parquet(path: str, columns: list[str] | None = None):
    import ray

    ds = ray.data.read_parquet(path)
    return ds.select_columns(columns) if columns else ds


def write_parquet(ds, path: str) -> None:
    ds.write_parquet(path)


def rechunk(ds, rows_per_block: int):
    return ds.repartition(target_num_rows_per_block=rows_per_block)


def map_tables(ds, fn: Callable[..., Any], **fn_kwargs):
    """Stateless pyarrow-table -> table (or iterator of tables) transform, run as Ray tasks."""
    return ds.map_batches(fn, batch_format="pyarrow", batch_size=None, fn_kwargs=fn_kwargs or None)


def map_with_actors(ds, cls: type, constructor_kwargs: dict, *, batch_size: int, min_actors: int = 1,
                    max_actors: int = 1, num_cpus: float = 1.0, num_gpus: float = 0.0):
    """Run a model-holding callable class in an autoscaling actor pool (min..max actors)."""
    import ray

    return ds.map_batches(cls, fn_constructor_kwargs=constructor_kwargs, batch_size=batch_size,
                          batch_format="pyarrow", num_cpus=num_cpus, num_gpus=num_gpus or None,
                          compute=ray.data.ActorPoolStrategy(min_size=min_actors, max_size=max_actors))


def group_map(ds, key: str, fn: Callable[[pa.Table], pa.Table]):
    """Apply ``fn`` to all rows sharing ``key`` (a hash shuffle into ~2 partitions per cluster CPU; Ray's
    default of 200 partitions is pure overhead on small clusters)."""
    import ray

    partitions = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    return ds.groupby(key, num_partitions=partitions).map_groups(fn, batch_format="pyarrow")
