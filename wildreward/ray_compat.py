"""Every Ray call the library makes, in one place (the Ray API churns: Train V2, `compute=` vs `concurrency=`...).

Pinned to Ray 2.60. Stage code builds plain Python callables; this module turns them into Ray Data operators.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

# Loopback-only local clusters, no token file, no usage reporting: the documented dev/CI setup (platform.md §2).
# jemalloc: Arrow's default pool here (mimalloc) keeps freed buffers, so a worker that once held a big block stays
# big; jemalloc returns them within a second (extraction peak at 50k turns: 5.1 -> 3.8 GB). Cluster images set it too.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                 "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}


def init_ray(num_cpus: int | None = None, object_store_fraction: float | None = None,
             preserve_order: bool = False) -> None:
    """Join the cluster of a ``ray job submit`` (RAY_ADDRESS set) or start a private local one.

    The other two settings hold for the Ray Data work of the stage that calls this. ``object_store_fraction``: the
    share of the cluster's object store blocks in flight may fill (None: Ray's default, half). ``preserve_order``:
    operators keep their input order, so limits and splits pick the same rows in a resumed run."""
    import ray

    if not ray.is_initialized():
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    # pyarrow picks its allocator once, at import, from ARROW_DEFAULT_MEMORY_POOL: a driver that imported it before
    # the variable was set (this module does; so do the benchmarks and notebooks) would keep mimalloc's retained
    # buffers.
    wanted = os.environ.get("ARROW_DEFAULT_MEMORY_POOL")
    if wanted and pa.default_memory_pool().backend_name != wanted:
        pa.set_memory_pool({"jemalloc": pa.jemalloc_memory_pool, "mimalloc": pa.mimalloc_memory_pool,
                            "system": pa.system_memory_pool}[wanted]())
    ctx = ray.data.DataContext.get_current()
    # Actor-pool stages log one line per block otherwise; progress bars carry the information.
    ctx.enable_progress_bars = True
    # In a job's log (stdout is no terminal) Ray Data writes every operator's state every 10 s, most of a run's
    # log; keep each dataset's total, once a minute. WILDREWARD_DATA_PROGRESS=full brings the full dump back.
    full = os.environ.get("WILDREWARD_DATA_PROGRESS") == "full"
    ctx.enable_operator_progress_bars = full or sys.stdout.isatty()
    os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", "10" if full else "60")
    # A task buffers its output up to one block before handing it on; at the default 128 MiB, a row-wise UDF whose
    # output outgrows its input (final_udf adds the RM text) made the 500k-turn peak (1.3 GB over its tasks).
    ctx.target_max_block_size = 32 * 2**20
    # Set on every call: the pipeline job runs all stages in one driver, and extraction's small share must not
    # carry over to training's ingest or eval, nor training's ordering to eval.
    ctx.override_object_store_memory_limit_fraction = object_store_fraction
    ctx.execution_options.preserve_order = preserve_order


def from_items(items: list[dict], num_blocks: int | None = None):
    """One block per item unless ``num_blocks`` is given (a block is the unit of work of a task or actor call)."""
    import ray

    return ray.data.from_items(items, override_num_blocks=max(1, num_blocks or len(items)))


def read_parquet(path: str | list[str], columns: list[str] | None = None):
    """Two Ray Data 2.60 read defaults are sized for big clusters and tuned down here (set a variable to
    override; the driver reads them when it plans a read):

    - Files are listed by a pool of 32 footer-reading actors per read (a worker process of ~100 MB each, started
      on demand). One actor per 8 CPUs instead: on 2 CPUs the pool was 1.6 GB of extraction's peak at 50k turns.
    - A read task takes up to 128 MiB of uncompressed row groups. Our rows are long texts, and a task's output
      is held again by the filter or UDF fused after it and by the write that follows; with 32 MiB units the
      peak of extraction at 50k turns fell from 3.6 to 3.0 GB (one pair of runs).
    """
    import ray

    os.environ.setdefault("RAY_DATA_PARQUET_BIN_PACKING_BYTES", str(32 * 2**20))
    if "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in os.environ:  # set once per process, by the first read
        cpus = int(ray.cluster_resources().get("CPU", 1))
        os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] = str(min(32, max(1, cpus // 8)))
    ds = ray.data.read_parquet(path)
    return ds.select_columns(columns) if columns else ds


def write_parquet(ds, path: str) -> None:
    """Write tasks reserve no CPU: they are I/O, and with a CPU each they starved behind the read and the actor
    pool holding every CPU, so all annotated blocks waited in the object store until the read ended (memory grew
    with the input; a crash lost every unwritten row). Their number is bounded by the cluster's size instead.

    Row groups of up to 2048 rows: Ray writes every block it is handed as its own row group, so actor outputs of
    32 rows made files of 8 row groups and 44 KB footers; at 500k turns, planning the next read of those 1,569
    files and checking their ids grew the driver by ~0.45 GB. 2048 rows is still small enough (~10 MB of text)
    for reads to split big files between tasks."""
    import ray

    ds.write_parquet(path, ray_remote_args={"num_cpus": 0}, row_group_size=2048,
                     concurrency=max(4, int(ray.cluster_resources().get("CPU", 1)) // 2))


def rechunk(ds, rows_per_block: int):
    return ds.repartition(target_num_rows_per_block=rows_per_block)


def map_tables(ds, fn: Callable[..., Any], *, rows_per_batch: int | None = None, **fn_kwargs):
    """Stateless pyarrow-table -> table (or iterator of tables) transform, run as Ray tasks. ``rows_per_batch``
    bounds the rows of one call: a row-wise Python UDF's memory follows its batch, and a whole block after a
    read can be hundreds of MB (5 GB in one worker at 500k turns before this bound)."""
    return ds.map_batches(fn, batch_format="pyarrow", batch_size=rows_per_batch, fn_kwargs=fn_kwargs or None)


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


# ---------------------------------------------------------------- Ray Train (V2, the default since Ray 2.51)

def fit_torch(train_fn: Callable[[dict], None], loop_config: dict, *, datasets: dict, split: list[str],
              num_workers: int, use_gpu: bool, cpus_per_worker: float, name: str, storage_path: str,
              max_failures: int, num_to_keep: int):
    """TorchTrainer.fit(). Re-running with the same ``name`` and ``storage_path`` resumes from the last checkpoint
    (Train V2 has no ``resume_from_checkpoint``). Data order is preserved so every rank sees the same rows in
    the same order after a restart."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = True
    for ds in datasets.values():
        # A dataset runs with the DataContext copied when it was made. The workers run the unsplit ones (the
        # held-out set), and their bars would repeat in the job log for as long as a worker lives.
        ds.context.enable_progress_bars = False
    trainer = TorchTrainer(
        train_fn, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep)),
        datasets=datasets, dataset_config=DataConfig(datasets_to_split=split, execution_options=ingest))
    return trainer.fit()


def train_rank() -> tuple[int, int]:
    import ray.train

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def train_device():
    import ray.train.torch

    return ray.train.torch.get_device()


def train_shard(name: str):
    import ray.train

    return ray.train.get_dataset_shard(name)


def prepare_ddp_model(model):
    import ray.train.torch

    return ray.train.torch.prepare_model(model)


@contextlib.contextmanager
def restored_checkpoint():
    """The run's latest checkpoint as a local directory (after a worker restart or a re-run), else None."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        yield None
        return
    with ckpt.as_directory() as d:
        yield Path(d)


@contextlib.contextmanager
def result_checkpoint(result):
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        yield Path(d)


def report(metrics: dict, checkpoint_dir: str | Path | None = None) -> None:
    """Every rank must call this at the same points (it is a barrier); each rank's directory is merged into one
    checkpoint, which is how all ZeRO shards end up together."""
    import ray.train

    ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
    ray.train.report(metrics, checkpoint=ckpt)


# ---------------------------------------------------------------- Ray Serve

def serve_run(app, *, name: str, host: str, port: int, route_prefix: str = "/"):
    """Start Serve's HTTP proxy on ``host:port`` (loopback by default) and deploy ``app``; returns its handle."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    return serve.run(app, name=name, route_prefix=route_prefix)


def serve_handle(app_name: str, deployment: str = "RewardServer"):
    from ray import serve

    return serve.get_deployment_handle(deployment, app_name=app_name)


def serve_shutdown() -> None:
    from ray import serve

    serve.shutdown()


def serve_delete(app_name: str) -> None:
    from ray import serve

    serve.delete(app_name)


def serve_replica_states(app_name: str, deployment: str = "RewardServer") -> dict[str, int]:
    """Replica counts by state (``RUNNING``, ``STARTING``, ...) of one deployment."""
    from ray import serve

    return dict(serve.status().applications[app_name].deployments[deployment].replica_states)


# ---------------------------------------------------------------- tasks

def run_tasks(fn: Callable[..., Any], args: list[tuple], max_parallel: int) -> list[Any]:
    """``fn(*a)`` for each ``a`` as Ray tasks, at most ``max_parallel`` at once, results in input order. The tasks
    ask for no CPU themselves: what they launch (Train workers, actor pools) asks for its own resources."""
    import ray

    remote = ray.remote(num_cpus=0, max_retries=0)(fn)
    pending: dict[Any, int] = {}
    results: list[Any] = [None] * len(args)
    next_index = 0
    while next_index < len(args) or pending:
        while next_index < len(args) and len(pending) < max_parallel:
            pending[remote.remote(*args[next_index])] = next_index
            next_index += 1
        (done,), _ = ray.wait(list(pending), num_returns=1)
        results[pending.pop(done)] = ray.get(done)
    return results


# ---------------------------------------------------------------- job submission

def job_runtime_env(base: dict, env_names: list[str], environ: dict[str, str] | None = None) -> dict:
    """``base`` with the named variables of the submitting shell added to its ``env_vars``: a job on a cluster
    does not see that shell, and its drivers and actors inherit the job's env_vars. Unset names are skipped."""
    environ = os.environ if environ is None else environ
    env_vars = {**base.get("env_vars", {}), **{n: environ[n] for n in env_names if environ.get(n)}}
    return {**base, "env_vars": env_vars}


def submit_job(address: str, entrypoint: str, runtime_env: dict, submission_id: str | None = None) -> str:
    """Submits through the SDK, so the env values travel in the request body, not on a command line."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address).submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                                   submission_id=submission_id)


# ---------------------------------------------------------------- cluster state (tests, benchmarks)

def cluster_state(dashboard_url: str, timeout_s: float = 10.0) -> dict:
    """Alive nodes and not-yet-dead actors (alive, pending, restarting) via the state API of the cluster whose
    dashboard is at ``dashboard_url``. The address is explicit: on a shared machine "auto" can find someone
    else's cluster."""
    from ray.util.state import list_actors, list_nodes

    nodes = list_nodes(address=dashboard_url, filters=[("state", "=", "ALIVE")], limit=10_000, timeout=timeout_s,
                       raise_on_missing_output=False)
    actors = list_actors(address=dashboard_url, filters=[("state", "!=", "DEAD")], detail=True, limit=10_000,
                         timeout=timeout_s, raise_on_missing_output=False)
    return {"nodes": [{"node_id": n.node_id, "is_head": bool(n.is_head_node),
                       "cpus": float((n.resources_total or {}).get("CPU", 0))} for n in nodes],
            "actors": [{"actor_id": a.actor_id, "class_name": a.class_name, "repr_name": a.repr_name or "",
                        "state": a.state, "pid": a.pid, "node_id": a.node_id, "num_restarts": a.num_restarts}
                       for a in actors]}


# ---------------------------------------------------------------- actors

def start_actors(cls: type, n: int, kwargs: dict, *, num_cpus: float, num_gpus: float) -> list:
    """``n`` actors of ``cls``; returns once every constructor has finished (so errors surface here)."""
    import ray

    actor_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus or None)(cls)
    actors = [actor_cls.remote(**kwargs) for _ in range(n)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    return actors


def call(actor, method: str, *args):
    """A blocking actor method call."""
    import ray

    return ray.get(getattr(actor, method).remote(*args))


def call_all(actors: list, method: str, *args) -> list:
    """The same call on every actor; large arguments are put in the object store once, not once per actor."""
    import ray

    refs = [ray.put(a) for a in args]
    return ray.get([getattr(actor, method).remote(*refs) for actor in actors])
