"""Autoscaling of the extraction stage on a local fake multi-node Ray cluster (Ray's fake_multinode provider).

With a backlog of turns for a slow (stub) annotator, the annotator actor pool grows from ``min_actors`` to
``max_actors``, the pending actors make the autoscaler add (fake) worker nodes, and once the work is done the added
nodes go idle and are removed.

The cluster and the trace are :mod:`wildreward.testing.fake_cluster`'s, shared with the scale benchmark.
"""
from __future__ import annotations


import pyarrow.compute as pc
import pytest

from wildreward.testing.fake_cluster import ClusterTrace, FakeAutoscalingCluster, processes_marked, wait_for
from tests.conftest import CHATLOGS
from wildreward.storage import read_table
from wildreward.testing.openai_stub import start_stub

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]



# ---------------------------------------------------------------- the test

MAX_ACTORS = 4
ACTOR_CPUS = 0.5
# One request in flight per actor, 200 ms each: 5 turns/s per actor, so the ~560 kept turns of the LMSYS sample
# are a backlog of ~110 s for one actor, in 18 blocks of 32 turns (8 x the 4-row batch): long enough for the fake
# nodes to start, and enough blocks for the pool to keep up its utilisation while it grows.
STUB_LATENCY_MS = 200
HEAD_CPUS, WORKER_CPUS, MAX_WORKERS = 1, 4, 2


@pytest.fixture
def stub():
    server = start_stub(latency_ms=STUB_LATENCY_MS)
    yield server
    server.stop()


def test_extract_scales_the_annotator_pool_out_and_nodes_back_in(tmp_path, stub):
    import ray

    from wildreward.config import load_config
    from wildreward.extract.config import ExtractConfig
    from wildreward.extract.pipeline import run_extract

    out = tmp_path / "run"
    cfg = load_config(ExtractConfig, None, [
        f"output_dir={out}", f"read.paths=[{CHATLOGS / 'lmsys_chat_sample.jsonl'}]",
        "annotator.backend=http", f"annotator.http.base_url={stub.url}", "annotator.http.concurrency=1",
        "annotator.batch_size=4", "annotator.min_actors=1", f"annotator.max_actors={MAX_ACTORS}",
        f"annotator.num_cpus={ACTOR_CPUS}", "refusal.enabled=false", "mining.enabled=false", "split.test_size=20"])
    # The head's one CPU holds at most two half-CPU annotators, so four need an added worker. Ray Data gives an
    # operator a share of the cluster's CPUs (~60% with the Write tasks beside it): 3 of the 5 CPUs of head + one
    # 4-CPU worker, room for all four. (With 2-CPU workers the pool needed both to join before the backlog ran out,
    # which a loaded CI machine missed: peak 3.)
    cluster = FakeAutoscalingCluster(head_cpus=HEAD_CPUS, worker_cpus=WORKER_CPUS, max_workers=MAX_WORKERS,
                                     idle_timeout_minutes=0.1)
    trace_path = tmp_path / "autoscaling_trace.json"
    try:
        cluster.start()
        ray.init(address=cluster.address, log_to_driver=False)
        with ClusterTrace(cluster.dashboard_url, pool="AnnotateUDF") as trace:
            assert wait_for(lambda: trace.series("nodes"), 60, 0.5), f"no state API sample: {trace.errors}"
            initial = trace.series("nodes")[0]
            trace.mark("extract start")
            stats = run_extract(cfg)
            trace.mark("extract done")
            # The pool's actors are gone with the stage; the idle worker nodes are then removed.
            scaled_in = wait_for(lambda: trace.series("worker_nodes")[-1] == 0, 120, 1.0)
            trace.mark("scaled in" if scaled_in else "scale-in deadline")
        trace.write(trace_path, config={"head_cpus": HEAD_CPUS, "worker_cpus": WORKER_CPUS, "max_workers": MAX_WORKERS,
                                        "min_actors": 1, "max_actors": MAX_ACTORS, "actor_cpus": ACTOR_CPUS,
                                        "stub_latency_ms": STUB_LATENCY_MS},
                    stats={k: stats[k] for k in ("turns", "annotate", "split")})
    finally:
        ray.shutdown()
        marker = cluster.temp_dir
        cluster.save_logs(tmp_path / "cluster_logs")
        cluster.shutdown()
    assert marker and not processes_marked(marker), "cluster processes left behind"

    nodes, pool = trace.series("nodes"), trace.series("pool_alive")
    print(f"trace: {trace_path}; peak nodes {max(nodes)} (initial {initial}), peak pool {max(pool)}")
    assert initial == 1, f"the cluster should start with the head only: {trace.samples[:3]}"
    assert max(nodes) > initial, f"no worker node joined; trace in {trace_path}"
    assert max(pool) == MAX_ACTORS, f"the annotator pool peaked at {max(pool)} < {MAX_ACTORS}; trace in {trace_path}"
    assert max(trace.series("pool_nodes")) > 1, f"no annotator ran on an added node; trace in {trace_path}"
    assert trace.series("pool_alive")[-1] == 0, f"the annotator pool did not shrink; trace in {trace_path}"
    assert scaled_in and trace.series("worker_nodes")[-1] == 0, f"idle workers were not removed; trace in {trace_path}"

    # Nothing lost or doubled on the way.
    assert all(stats["reconciled"].values())
    assert stats["annotate"]["annotated"] == stats["turns"]["kept"] > 300
    assert stats["annotate"]["errors"] == 0
    ann = read_table(out / "stages" / "annotate", ["id"])
    assert len(pc.unique(ann["id"])) == ann.num_rows == stats["turns"]["kept"]
    served = stub.stats()["feedback"]["requests"]
    assert served >= stats["turns"]["kept"], served
