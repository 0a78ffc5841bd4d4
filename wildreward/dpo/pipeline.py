"""``run_dpo``: online DPO of a policy against the served reward model.

    prompts (files or chat logs; held-out ones set aside)
    -> rollout engine actors (vLLM or transformers) with the initial policy -> "before" evaluation
    -> Ray Train workers run the step loop (wildreward/dpo/loop.py): rollout, scoring through Serve, pairs,
       reference log-probs, DPO update (DeepSpeed or DDP), weight push to the engines
    -> "after" evaluation with the engines' final weights -> policy/ (HF safetensors), metrics, report, curves

The RM must be running: a Serve application in the same cluster (``rm.app_name``, called through a handle) or an
HTTP endpoint (``rm.endpoint``); the run checks it answers before starting.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from wildreward import ray_compat as rc
from wildreward.config import save_config
from wildreward.dpo.checks import CHECKS, run_checks
from wildreward.dpo.config import DPOConfig
from wildreward.dpo.pairs import final_answer
from wildreward.dpo.prompts import load_prompts, prompts_from_chatlogs
from wildreward.dpo.rollout import RolloutEngine
from wildreward.dpo.scoring import score_samples
from wildreward.logs import stage_logger
from wildreward.models import resolve_model
from wildreward.plots import pyplot
from wildreward.storage import Location, save_png

EVAL_SAMPLES = 2  # responses per held-out prompt in the before/after evaluation


log = stage_logger("dpo")


def load_all_prompts(cfg: DPOConfig, tokenizer) -> tuple[list[dict], dict[str, int]]:
    kwargs = {"max_prompt_tokens": cfg.policy.max_prompt_tokens, "tokenizer": tokenizer,
              "use_chat_template": cfg.policy.use_chat_template}
    if cfg.prompts.paths:
        return load_prompts(cfg.prompts.paths, field=cfg.prompts.field, n=cfg.prompts.n, **kwargs)
    if cfg.prompts.chatlogs:
        return prompts_from_chatlogs(cfg.prompts.chatlogs, cfg.prompts.n, **kwargs)
    raise ValueError("no prompts: set prompts.paths (JSONL/Parquet) or prompts.chatlogs (chat logs)")


def split_prompts(prompts: list[dict], cfg: DPOConfig) -> tuple[list[dict], list[dict], int]:
    """(train, held-out, total steps)."""
    order = np.random.default_rng(cfg.seed).permutation(len(prompts))
    held = [prompts[i] for i in order[:cfg.eval.held_out_prompts]]
    train = [prompts[i] for i in order[cfg.eval.held_out_prompts:]]
    per_step = cfg.batch.prompts_per_step
    if len(train) < per_step:
        raise ValueError(f"{len(train)} training prompts (after {len(held)} held out) < batch.prompts_per_step="
                         f"{per_step}: give more prompts or a smaller batch")
    total = (len(train) // per_step) * cfg.epochs
    return train, held, min(total, cfg.max_steps) if cfg.max_steps else total


def evaluate_policy(engine, held_out: list[dict], cfg: DPOConfig) -> dict[str, Any]:
    """Mean RM reward and response length on the held-out prompts, and the instruction-check pass rates."""
    out: dict[str, Any] = {}
    if held_out:
        samples = rc.call(engine, "generate", held_out, EVAL_SAMPLES, cfg.policy.temperature, cfg.policy.top_p)
        score_samples(samples, {p["id"]: p["query"] for p in held_out}, cfg.rm)
        rewards = [s["reward"] for s in samples if s["reward"] is not None]
        out.update(prompts=len(held_out), samples=len(samples), unscored=len(samples) - len(rewards),
                   reward_mean=float(np.mean(rewards)) if rewards else None,
                   response_tokens_mean=float(np.mean([len(s["response_ids"]) for s in samples])),
                   no_eos_rate=float(np.mean([not s["finished"] for s in samples])))
    if cfg.eval.instruction_checks:
        check_prompts = [{"id": c.id, "messages": [{"role": "user", "content": c.prompt}]} for c in CHECKS]
        samples = rc.call(engine, "generate", check_prompts, EVAL_SAMPLES, cfg.policy.temperature, cfg.policy.top_p)
        by_id: dict[str, list[str]] = {}
        for s in samples:
            by_id.setdefault(s["prompt_id"], []).append(final_answer(s["response"]))
        out["instruction_checks"] = run_checks(by_id)
    return out


def check_rm(cfg: DPOConfig, prompt: dict) -> None:
    probe = [{"prompt_id": prompt["id"], "response": "A short test answer."}]
    score_samples(probe, {prompt["id"]: prompt["query"]}, cfg.rm)
    if probe[0]["error"]:
        where = cfg.rm.endpoint or f"Serve application {cfg.rm.app_name!r}"
        raise RuntimeError(f"the reward model at {where} does not answer: {probe[0]['error']} "
                           "(start it with `wildreward serve` first)")


def export_policy(checkpoint_dir: Path, cfg: DPOConfig, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from wildreward.train.engine import consolidated_state_dict

    path = resolve_model(cfg.policy.path)
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    loaded = model.load_state_dict(consolidated_state_dict(checkpoint_dir, cfg), strict=False)
    # Only a tied output embedding may be absent (it is the input embedding). Anything else missing or unexpected
    # means the checkpoint does not fit this model, and saving would export the untrained policy.
    kept = {param.data_ptr() for name, param in model.named_parameters(remove_duplicate=False)
            if name not in loaded.missing_keys}
    missing = [k for k in loaded.missing_keys if model.get_parameter(k).data_ptr() not in kept]
    if missing or loaded.unexpected_keys:
        raise RuntimeError(f"the DPO checkpoint does not fit {path}: missing {missing[:5]}, unexpected "
                           f"{loaded.unexpected_keys[:5]}")
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(path).save_pretrained(target)


def plot_curves(records: list[dict], path: Location) -> None:
    plt = pyplot()

    panels = [(("reward_mean", "chosen_reward", "rejected_reward"), "RM reward (all / chosen / rejected)"),
              (("loss",), "DPO loss"), (("reward_accuracy",), "implicit reward accuracy"),
              (("kl_pairs",), "log pi - log ref per token (pairs)"),
              (("response_tokens_mean", "chosen_tokens", "rejected_tokens"), "response tokens"),
              (("tie_rate", "no_eos_rate"), "tie rate / no-EOS rate")]
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.4))
    steps = [r["step"] for r in records]
    for ax, (keys, title) in zip(axes.flat, panels):
        for key in keys:
            ax.plot(steps, [r.get(key, np.nan) if r.get(key) is not None else np.nan for r in records],
                    marker=".", label=key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    ax = axes.flat[len(panels)]
    parts = ("rollout_s", "scoring_s", "reference_s", "update_s", "weight_sync_s")
    bottom = np.zeros(len(records))
    for key in parts:
        values = np.array([r.get(key, 0.0) for r in records])
        ax.bar(steps, values, bottom=bottom, label=key[:-2])
        bottom += values
    ax.set_title("time per step (s)", fontsize=9)
    ax.legend(fontsize=7)
    axes.flat[-1].axis("off")
    fig.tight_layout()
    save_png(fig, path, dpi=100)
    plt.close(fig)


def write_report(out: Location, before: dict, after: dict, prompt_counts: dict, steps: int) -> dict[str, Any]:
    from wildreward.train.common import read_metrics

    records = read_metrics(out)
    train = [r for r in records if r["kind"] == "train"]
    if train:
        plot_curves(train, out / "curves.png")
    timing = {k: float(np.sum([r.get(k, 0.0) for r in train])) for k in
              ("rollout_s", "scoring_s", "reference_s", "update_s", "weight_sync_s", "step_s")}
    report = {"steps": steps, "prompts": prompt_counts, "before": before, "after": after, "time_s": timing,
              "scoring_share": timing["scoring_s"] / timing["step_s"] if timing["step_s"] else None,
              "final": train[-1] if train else None}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_dpo(cfg: DPOConfig) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from wildreward.dpo.loop import dpo_loop

    out = Location.parse(cfg.output_dir)
    cfg = cfg.model_copy(update={"output_dir": str(out)})
    save_config(cfg, out, "dpo")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.policy.path))
    prompts, counts = load_all_prompts(cfg, tokenizer)
    train, held_out, total_steps = split_prompts(prompts, cfg)
    log(f"prompts {counts}; {len(train)} for training, {len(held_out)} held out; {total_steps} steps")
    rc.init_ray()
    check_rm(cfg, prompts[0])
    engines = rc.start_actors(
        RolloutEngine, cfg.rollout.num_engines,
        {"policy_path": cfg.policy.path, "backend": cfg.rollout.backend, "seed": cfg.seed,
         "max_prompt_tokens": cfg.policy.max_prompt_tokens, "max_response_tokens": cfg.policy.max_response_tokens,
         "use_chat_template": cfg.policy.use_chat_template, "engine_kwargs": cfg.rollout.engine_kwargs},
        num_cpus=cfg.rollout.num_cpus_per_engine, num_gpus=cfg.rollout.num_gpus_per_engine)
    before = evaluate_policy(engines[0], held_out, cfg)
    log(f"before: {before}")
    storage = cfg.checkpoint.storage_path or str(out / "ray")
    result = rc.fit_torch(
        dpo_loop, {"cfg": cfg.model_dump(mode="json"), "prompts": train, "engines": engines,
                   "total_steps": total_steps},
        datasets={}, split=[], num_workers=cfg.dist.num_workers, use_gpu=cfg.dist.use_gpu,
        cpus_per_worker=cfg.dist.cpus_per_worker, name=cfg.checkpoint.name, storage_path=storage,
        max_failures=cfg.checkpoint.max_failures, num_to_keep=cfg.checkpoint.num_to_keep)
    after = evaluate_policy(engines[0], held_out, cfg)  # the engines hold the final weights (pushed after the
    log(f"after: {after}")                             # last update)
    policy_dir = out / "policy"
    with rc.result_checkpoint(result) as ckpt, policy_dir.local_folder() as target:  # exported on the driver
        export_policy(ckpt, cfg, target)
    report = write_report(out, before, after, counts, total_steps)
    report["policy_dir"] = str(policy_dir)
    log(f"policy: {policy_dir}; report: {out / 'report.json'}, curves: {out / 'curves.png'}")
    return report
