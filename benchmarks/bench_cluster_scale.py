"""Cluster-scale behaviour of ``run_extract`` with a cheap annotator: cost vs log size, and throughput vs nodes.

(a) **Size sweep** (default 5k, 50k, 500k turns) on an embedded local Ray (2 CPUs): wall time, per-stage seconds
    and peak memory (PSS summed over this process and every descendant: Ray's GCS, raylet, workers, actors and the
    stub). Targets: time grows linearly (the marginal seconds per 1k extra turns of the last size step is within
    1.5x of the first step's; fixed start-up costs cancel out), peak memory stays flat (largest / smallest <= 1.5x).
(b) **Node sweep** (default 1, 2, 4 nodes) on :class:`wildreward.testing.fake_cluster.FakeAutoscalingCluster`
    with a fixed number of fake nodes (``min_workers = max_workers = nodes - 1``), each with ``--node-cpus`` CPUs;
    the annotator pool may grow to 8 actors of 1 CPU, so the cluster's CPUs, i.e. its nodes, bound the pool. The
    stub is slow (``--node-latency-ms`` per request, 2 in flight per actor), so an actor is bound by the annotator's
    latency as with a real remote LLM, not by this machine's CPUs, which all fake nodes share. Reported: annotated
    rows/s over the stub's request window, the pool's peak size and which nodes ran it (from a
    :class:`ClusterTrace`).

The annotator is the ``http`` backend (constrained) against ``wildreward/testing/openai_stub.py``: ITS LABELS ARE
MEANINGLESS (a hash); hindsight mining runs with a randomly initialised 2-layer encoder (MiniLM's tokenizer), so the
mining stage's shuffle and actor pool do their real work while the model costs almost nothing. Refusal judging is
on. Inputs are ShareGPT conversations repeated with an id suffix (see ``bench_extract_scale.write_input``).

Run alone (it loads both CPUs for ~45 minutes at the defaults):
``python benchmarks/bench_cluster_scale.py [--sizes 5000,50000,500000] [--nodes 1,2,4] [--node-turns 3000]``;
results go to benchmarks/results/bench_cluster_scale.json and .md, the traces and a figure next to them.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wildreward.ray_compat import LOCAL_RAY_ENV  # noqa: E402

for _key, _value in {**LOCAL_RAY_ENV, "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_key, _value)

from benchmarks.bench_extract_scale import (STAGES, clean_conversations, count_turns,  # noqa: E402
                                            wait_for_ray_children, write_input)

SLUG = "bench_cluster_scale"


def tiny_encoder(path: Path) -> str:
    """A random 2-layer BERT (hidden 64) with MiniLM's tokenizer: mining's cost without MiniLM's compute."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from wildreward.models import resolve_model

    if not (path / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(resolve_model("minilm"))
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=128, max_position_embeddings=512, pad_token_id=tok.pad_token_id)
                  ).save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
    return str(path)


def extract_config(out: Path, input_file: Path, n_turns: int, stub_url: str, encoder: str, *, actors: tuple[int, int],
                   actor_cpus: float, concurrency: int):
    from wildreward.config import load_config
    from wildreward.extract.config import ExtractConfig

    return load_config(ExtractConfig, None, [
        f"output_dir={out}", f"read.paths=[{input_file}]", "annotator.backend=http", "annotator.mode=constrained",
        "annotator.model=stub-model", f"annotator.http.base_url={stub_url}",
        f"annotator.http.concurrency={concurrency}", f"annotator.num_cpus={actor_cpus}",
        f"annotator.min_actors={actors[0]}", f"annotator.max_actors={actors[1]}", f"mining.encoder={encoder}",
        "mining.num_cpus=0.5", f"split.test_size={max(1, n_turns // 20)}"])


def summarise(stats: dict, stub_stats: dict) -> dict:
    feedback = stub_stats.get("feedback", {})
    window = feedback.get("last_s", 0) - feedback.get("first_s", 0)
    annotated = stats["annotate"]["annotated"]
    return {"stage_seconds": {s: stats[s].get("seconds") for s in STAGES},
            "turns": stats["turns"]["turns"], "kept": stats["turns"]["kept"], "annotated": annotated,
            "annotate_errors": stats["annotate"]["errors"], "refusal_judged": stats["refusal"].get("judged"),
            "mining_candidates": stats["mining"].get("candidates"), "final_kept": stats["final"]["kept"],
            "reconciled": all(stats["reconciled"].values()),
            "annotate_rows_per_s_server": round(feedback.get("requests", 0) / window, 1) if window > 0 else None}


def run_size(n_turns: int, input_file: Path, args, stub, encoder: str) -> dict:
    import ray

    from benchmarks.common import PeakMemory
    from wildreward.extract.pipeline import run_extract

    out = args.work_dir / "runs" / f"size_{n_turns}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = extract_config(out, input_file, n_turns, stub.url, encoder, actors=(args.actors, args.actors),
                         actor_cpus=0.5, concurrency=args.concurrency)
    stub.reset()
    gc.collect()
    load_before = os.getloadavg()
    print(f"[bench] size {n_turns}: -> {out}", flush=True)
    with PeakMemory() as mem:
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        stats = run_extract(cfg)
        wall = time.perf_counter() - start
    ray.shutdown()
    wait_for_ray_children({stub.proc.pid})
    result = {"turns_target": n_turns, "wall_s": round(wall, 1), "peak_pss_mb": mem.peak_mb,
              "peak_private_mb": mem.peak_private_mb, "peak_shm_mb": mem.peak_shm_mb, "peak_at_s": mem.peak_at_s,
              "peak_breakdown_mb": mem.peak_breakdown,
              "stage_peaks": {s: mem.peak_between(stats[s]["started_at"], stats[s]["started_at"] + stats[s]["seconds"])
                              for s in STAGES if "started_at" in stats[s]},
              "s_per_1k_turns": round(wall / n_turns * 1000, 2), **summarise(stats, stub.stats()),
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    print(f"[bench] size {n_turns}: {json.dumps(result)}", flush=True)
    if not args.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    return result


def run_nodes(nodes: int, input_file: Path, args, stub, encoder: str) -> dict:
    import ray

    from wildreward.testing.fake_cluster import ClusterTrace, FakeAutoscalingCluster, wait_for
    from wildreward.extract.pipeline import run_extract

    out = args.work_dir / "runs" / f"nodes_{nodes}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = extract_config(out, input_file, args.node_turns, stub.url, encoder, actors=(1, 8), actor_cpus=1.0,
                         concurrency=2)
    cluster = FakeAutoscalingCluster(head_cpus=args.node_cpus, worker_cpus=args.node_cpus, min_workers=nodes - 1,
                                     max_workers=nodes - 1, idle_timeout_minutes=10)
    stub.reset()
    print(f"[bench] {nodes} node(s) x {args.node_cpus} CPUs: -> {out}", flush=True)
    try:
        cluster.start()
        ray.init(address=cluster.address, log_to_driver=False)
        with ClusterTrace(cluster.dashboard_url, pool="AnnotateUDF", interval_s=1.0) as trace:
            if not wait_for(lambda: trace.series("nodes") and trace.series("nodes")[-1] == nodes, 300, 1.0):
                raise RuntimeError(f"only {trace.series('nodes')[-1:]} of {nodes} nodes started: {trace.errors[-3:]}")
            trace.mark("extract start")
            start = time.perf_counter()
            stats = run_extract(cfg)
            wall = time.perf_counter() - start
            trace.mark("extract done")
        trace_file = trace.write(args.results_dir / f"{SLUG}_trace_{nodes}nodes.json", nodes=nodes,
                                 node_cpus=args.node_cpus)
    finally:
        ray.shutdown()
        cluster.shutdown()
    pool = trace.series("pool_alive")
    result = {"nodes": nodes, "cluster_cpus": nodes * args.node_cpus, "run_extract_s": round(wall, 1),
              "peak_pool": max(pool) if pool else 0, "peak_pool_nodes": max(trace.series("pool_nodes") or [0]),
              **summarise(stats, stub.stats()), "trace": str(trace_file.relative_to(args.results_dir.parent.parent))}
    result["annotate_rows_per_s_per_actor"] = (
        round(result["annotate_rows_per_s_server"] / result["peak_pool"], 2)
        if result["peak_pool"] and result["annotate_rows_per_s_server"] else None)
    print(f"[bench] {nodes} node(s): {json.dumps(result)}", flush=True)
    if not args.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    return result


def plot(sizes: list[dict], nodes: list[dict], path: Path) -> None:
    from wildreward.plots import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    if sizes:
        x = [r["turns"] for r in sizes]
        axes[0].loglog(x, [r["wall_s"] for r in sizes], marker="o", label="measured")
        axes[0].loglog(x, [sizes[0]["wall_s"] * t / x[0] for t in x], "--", label="linear from smallest")
        axes[0].set(title="wall time vs turns", xlabel="turns", ylabel="s")
        axes[0].legend()
        axes[1].semilogx(x, [r["peak_pss_mb"] for r in sizes], marker="o", label="PSS")
        if all("peak_private_mb" in r for r in sizes):
            axes[1].semilogx(x, [r["peak_private_mb"] for r in sizes], marker="s", label="private (USS)")
            axes[1].semilogx(x, [r["peak_shm_mb"] for r in sizes], marker="^", label="object store (/dev/shm)")
        axes[1].set(title="peak memory (all processes)", xlabel="turns", ylabel="MB", ylim=(0, None))
        axes[1].legend()
    if nodes:
        n = [r["nodes"] for r in nodes]
        axes[2].plot(n, [r["annotate_rows_per_s_server"] for r in nodes], marker="o", label="measured")
        axes[2].plot(n, [nodes[0]["annotate_rows_per_s_server"] * k / n[0] for k in n], "--", label="linear")
        axes[2].set(title="annotation throughput vs fake nodes", xlabel="nodes", ylabel="rows/s", xticks=n)
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,50000,500000", help="turns per size-sweep run ('' to skip)")
    parser.add_argument("--actors", type=int, default=2, help="annotator actors (0.5 CPU each) in the size sweep")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per actor (size sweep)")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="stub latency per request (size sweep)")
    parser.add_argument("--nodes", default="1,2,4", help="node counts of the node sweep ('' to skip)")
    parser.add_argument("--node-turns", type=int, default=3000, help="turns per node-sweep run")
    parser.add_argument("--node-cpus", type=int, default=2, help="CPUs of each fake node")
    parser.add_argument("--node-latency-ms", type=float, default=100.0, help="stub latency in the node sweep")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/wildreward_bench_cluster"))
    parser.add_argument("--keep-outputs", action="store_true")
    parser.add_argument("--render-from", type=Path, help="only rebuild the checks, figure and markdown from a JSON")
    parser.add_argument("--nodes-from", type=Path,
                        help="take the node sweep from an earlier results JSON (with its time) instead of rerunning it")
    args = parser.parse_args()
    args.work_dir = args.work_dir.resolve()
    from benchmarks.common import RESULTS
    from wildreward.testing.openai_stub import start_stub

    args.results_dir = RESULTS
    if args.render_from:
        report(json.loads(args.render_from.read_text())["results"])
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    node_counts = [int(n) for n in args.nodes.split(",") if n]
    load_start = os.getloadavg()
    convs = clean_conversations()
    inputs = {n: write_input(convs, n, args.work_dir / "inputs" / f"sharegpt_{n}_turns.jsonl")
              for n in sorted(set(sizes + ([args.node_turns] if node_counts else [])))}
    clean_turns = sum(count_turns(c["messages"]) for c in convs)
    del convs
    gc.collect()
    encoder = tiny_encoder(args.work_dir / "tiny_encoder")

    size_runs, node_runs = [], []
    stub = start_stub(args.latency_ms)
    try:
        for n in sizes:
            size_runs.append(run_size(n, Path(inputs[n]["path"]), args, stub, encoder))
    finally:
        stub.stop()
    if args.nodes_from:
        earlier = json.loads(args.nodes_from.read_text())
        # A time already carried from an even earlier run wins.
        node_runs = [{"measured_utc": earlier["time_utc"], **r} for r in earlier["results"]["nodes"]]
        node_counts = []
    stub = start_stub(args.node_latency_ms)
    try:
        for k in node_counts:
            node_runs.append(run_nodes(k, Path(inputs[args.node_turns]["path"]), args, stub, encoder))
    finally:
        stub.stop()

    results = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "inputs": {"clean_sharegpt_turns": clean_turns, **{str(k): v for k, v in inputs.items()}},
               "sizes": size_runs, "nodes": node_runs,
               "loadavg_start": [round(x, 2) for x in load_start],
               "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    report(results)


def checks_of(size_runs: list[dict], node_runs: list[dict]) -> dict:
    checks: dict = {}
    if len(size_runs) > 1:
        # Linear time: the marginal cost of the last size step (seconds per extra 1k turns) is no more than 1.5x
        # that of the first; fixed costs (Ray start, actor start-up, model loads) cancel out in the differences.
        steps = [(b["wall_s"] - a["wall_s"]) / (b["turns"] - a["turns"]) * 1000
                 for a, b in zip(size_runs, size_runs[1:])]
        marginal = steps[-1] / steps[0]
        memory = size_runs[-1]["peak_pss_mb"] / size_runs[0]["peak_pss_mb"]
        checks["marginal_s_per_1k_turns"] = [round(x, 3) for x in steps]
        checks["marginal_cost_ratio"] = {"value": round(marginal, 2), "target": "<= 1.5", "met": marginal <= 1.5}
        checks["peak_memory_ratio"] = {"value": round(memory, 2), "target": "<= 1.5", "met": memory <= 1.5}
    if len(node_runs) > 1:
        base = node_runs[0]["annotate_rows_per_s_server"]
        checks["throughput_vs_nodes"] = {
            str(r["nodes"]): round(r["annotate_rows_per_s_server"] / base, 2) for r in node_runs}
    return checks


def report(results: dict) -> None:
    """Checks, figure and markdown from the measured runs (also re-rendered from a saved JSON)."""
    from benchmarks.common import RESULTS, write_results

    cfg, size_runs, node_runs = results["config"], results["sizes"], results["nodes"]
    checks = results["checks"] = checks_of(size_runs, node_runs)
    figure = RESULTS / f"{SLUG}.png"
    plot(size_runs, node_runs, figure)

    def stage_cells(r: dict) -> str:
        return " | ".join(str(r["stage_seconds"][s]) for s in STAGES)

    def stage_peak_cells(r: dict) -> str:
        peaks = [r["stage_peaks"].get(s, {}) for s in STAGES]
        return " | ".join(f"{p['peak_mb']:.0f} ({p['largest']} {p['largest_mb']:.0f})" if p else "" for p in peaks)

    md = f"""
`run_extract` with a cheap annotator (the `http` stub, MEANINGLESS hash labels) and a random tiny mining encoder:
the pipeline's own costs at scale. Refusal judging and mining on. Figure: `{figure.name}`.

## (a) Cost vs log size (local Ray, 2 CPUs, {cfg['actors']} annotator actors x {cfg['concurrency']} in flight, stub {cfg['latency_ms']:g} ms)

| turns | kept | wall s | s / 1k turns | peak PSS MB | peak private MB | peak /dev/shm MB | annotate rows/s (stub window) | mining candidates | reconciled |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(f"| {r['turns']:,} | {r['kept']:,} | {r['wall_s']} | {r['s_per_1k_turns']} | {r['peak_pss_mb']} | "  # noqa: E501 (markdown headings and table rows)
                f"{r.get('peak_private_mb', 'n/a')} | {r.get('peak_shm_mb', 'n/a')} | "
                f"{r['annotate_rows_per_s_server']} | {r['mining_candidates']} | {r['reconciled']} |"
                for r in size_runs) + """

Peak PSS is summed over the driver, every Ray process and the stub; private = summed USS (heaps), /dev/shm = the
object store's allocated pages (they also count in the PSS of the processes mapping them). Largest processes at
the PSS peak (MB, summed by title):

""" + "\n".join(f"- {r['turns']:,} turns, at {r['peak_at_s']} s: "
                + ", ".join(f"{k} {v:.0f}" for k, v in list(r['peak_breakdown_mb'].items())[:4])
                for r in size_runs) + f"""

Stage seconds:

| turns | {' | '.join(STAGES)} |
|---|{'---|' * len(STAGES)}
""" + "\n".join(f"| {r['turns']:,} | {stage_cells(r)} |" for r in size_runs) + f"""

Peak PSS MB within each stage (its largest process):

| turns | {' | '.join(STAGES)} |
|---|{'---|' * len(STAGES)}
""" + "\n".join(f"| {r['turns']:,} | {stage_peak_cells(r)} |" for r in size_runs if r.get("stage_peaks")) + f"""

Checks: {json.dumps({k: v for k, v in checks.items() if k != 'throughput_vs_nodes'})}

## (b) Throughput vs nodes ({cfg['node_turns']:,} turns; fake nodes of {cfg['node_cpus']} CPUs sharing this machine's 2; annotator actors of 1 CPU, up to 8; stub {cfg['node_latency_ms']:g} ms, 2 in flight per actor)

| nodes | cluster CPUs | peak pool | nodes running the pool | annotate rows/s (stub window) | rows/s per actor | run_extract s | trace |
|---|---|---|---|---|---|---|---|
""" + "\n".join(f"| {r['nodes']} | {r['cluster_cpus']} | {r['peak_pool']} | {r['peak_pool_nodes']} | "  # noqa: E501 (markdown headings and table rows)
                f"{r['annotate_rows_per_s_server']} | {r['annotate_rows_per_s_per_actor']} | {r['run_extract_s']} | "
                f"`{Path(r['trace']).name}` |" for r in node_runs) + f"""

Throughput relative to 1 node: {json.dumps(checks.get('throughput_vs_nodes'))}.{
    f" Node sweep measured {node_runs[0]['measured_utc']} (taken from that run's JSON)." if node_runs and
    node_runs[0].get('measured_utc') else ''}

Load average (1/5/15 min) at start {results['loadavg_start']}, at end {results['loadavg_end']} on {os.cpu_count()} CPUs
(per run in the JSON; the machine is shared, a load above 2 means other work competed).
"""
    path = write_results(SLUG, results, md)
    print(md)
    print(f"[bench] wrote {path}")




if __name__ == "__main__":
    main()
