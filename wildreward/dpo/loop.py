"""The online-DPO step loop, run by every Ray Train worker.

Per step: the step's prompts are split over the ranks; each rank has a rollout engine sample n responses per
prompt, scores them through the served RM and pairs best vs worst within each prompt. The pairs of all ranks are
gathered, checked (RM failure rate) and dealt out again evenly, so every rank runs the same number of
micro-batches: a rank is given ``prompts_per_step / workers`` pair slots, and slots without a pair carry weight 0.
Reference log-probs are computed for the kept pairs only (a frozen copy of the initial policy on each rank), then
one optimizer step per step, with the loss normalised to the mean over the step's real pairs. Rank 0 then pushes
the new weights into the rollout engines before the next generation.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from wildreward import ray_compat as rc
from wildreward.dpo.config import DPOConfig
from wildreward.dpo.loss import dpo_loss, sequence_logps
from wildreward.dpo.pairs import build_pairs
from wildreward.dpo.scoring import EMPTY, score_samples
from wildreward.models import resolve_model
from wildreward.storage import Location
from wildreward.train.common import (MetricsLog, all_reduce, barrier, checkpoint_and_report, gather_objects,
                                     peak_rss_mb, restore_checkpoint, seed_all)
from wildreward.train.engine import build_engine  # the RM trainer's engines: DeepSpeed ZeRO or DDP


def step_prompts(prompts: list[dict], step: int, per_step: int, seed: int) -> list[dict]:
    """The prompts of (1-based) ``step``: a seeded shuffle per epoch, cut into consecutive blocks."""
    steps_per_epoch = len(prompts) // per_step
    epoch, index = divmod(step - 1, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(len(prompts))
    return [prompts[i] for i in order[index * per_step:(index + 1) * per_step]]


def pair_rows(pairs: list[dict], samples: list[dict]) -> list[dict]:
    """Token ids and rewards of each pair, from the rollout samples."""
    by_key = {(s["prompt_id"], s["sample_index"]): s for s in samples}
    rows = []
    for p in pairs:
        chosen, rejected = by_key[(p["prompt_id"], p["chosen_index"])], by_key[(p["prompt_id"], p["rejected_index"])]
        rows.append({"prompt_id": p["prompt_id"], "prompt_ids": chosen["prompt_ids"],
                     "chosen_ids": chosen["response_ids"], "rejected_ids": rejected["response_ids"],
                     "chosen_reward": p["chosen_reward"], "rejected_reward": p["rejected_reward"]})
    return rows


def deal_slots(rows: list[dict], rank: int, world: int, slots: int) -> list[tuple[dict, float]]:
    """This rank's ``slots`` (pair, weight): its share of the pairs, padded with weight-0 copies so every rank
    runs the same micro-batches (collectives stay in step)."""
    mine = [(r, 1.0) for r in rows[rank::world]]
    if len(mine) > slots:
        raise RuntimeError(f"{len(mine)} pairs for {slots} slots")  # at most one pair per prompt
    filler = rows[0] if rows else None
    return mine + [(filler, 0.0)] * (slots - len(mine))


def encode_pairs(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, right-padded: input ids, attention mask and the response-token mask."""
    seqs = [(r["prompt_ids"], r[key]) for key in ("chosen_ids", "rejected_ids") for r in rows]
    width = max(len(p) + len(c) for p, c in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    response = torch.zeros_like(ids, dtype=torch.bool)
    for i, (prompt, completion) in enumerate(seqs):
        n = len(prompt) + len(completion)
        ids[i, :n] = torch.tensor(prompt + completion)
        attention[i, :n] = 1
        response[i, len(prompt):n] = True
    return {"input_ids": ids, "attention_mask": attention, "loss_mask": response}


def load_policy(path: str, device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(resolve_model(path), use_safetensors=True, dtype=dtype).to(device)


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout would make the policy's log-probs differ from the reference's at step 0; DPO runs without it. Both
    kinds: ``nn.Dropout`` modules, and the attention dropout rate that attention code passes to a function."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def micro_batch_loss(model, enc: dict[str, torch.Tensor], ref_logps: torch.Tensor, real: torch.Tensor,
                     sums: np.ndarray, cfg: DPOConfig, scale: int, n_pairs: int) -> torch.Tensor:
    """The DPO loss of one micro-batch (chosen rows, then rejected rows) over its ``real`` pairs, weighted by
    ``n_real * scale / n_pairs`` (see :func:`update_step`); the pairs' metrics are added to ``sums``."""
    logps = sequence_logps(model, enc["input_ids"], enc["attention_mask"], enc["loss_mask"],
                           length_normalize=cfg.loss.length_normalize)
    k, n_real = len(real), int(real.sum())
    if not n_real:  # padding slots only: keep the graph (every rank must run backward) with zero weight
        return 0.0 * logps.sum()
    pc, pr, ref_c, ref_r = logps[:k][real], logps[k:][real], ref_logps[:k][real], ref_logps[k:][real]
    loss, metrics = dpo_loss(pc, pr, ref_c, ref_r, beta=cfg.loss.beta, label_smoothing=cfg.loss.label_smoothing,
                             loss_type=cfg.loss.loss_type)
    tokens = enc["loss_mask"].sum(-1)
    tokens = torch.cat([tokens[:k][real], tokens[k:][real]])
    # log pi - log ref over the pairs' tokens: a KL estimate on reward-selected samples (biased; a trend).
    # Length-normalised log-probs are per-token means: weigh them back to sums before dividing by tokens.
    per_sequence = torch.cat([pc, pr]) - torch.cat([ref_c, ref_r])
    if cfg.loss.length_normalize:
        per_sequence = per_sequence * tokens
    logratio = float(per_sequence.detach().sum())
    sums[:] += [loss.item() * n_real, metrics["reward_accuracy"] * n_real, metrics["reward_margin"] * n_real,
                metrics["reward_chosen"] * n_real, metrics["reward_rejected"] * n_real, logratio, float(tokens.sum())]
    return loss * (n_real * scale / n_pairs)


def update_step(engine, reference, slots: list[tuple[dict, float]], micro: int, n_pairs: int, scale: int,
                cfg: DPOConfig, pad_id: int, device, times: dict[str, float]) -> dict[str, float]:
    """Reference log-probs for this rank's slots, then one optimizer step over them. Each micro-batch loss is
    (sum of its real pairs' losses) * scale / n_pairs, with scale = workers x accumulation: after the engine
    divides by the accumulation and averages over workers, the gradient is that of the mean over all real pairs."""
    batches = [slots[i:i + micro] for i in range(0, len(slots), micro)]
    encoded = [{k: v.to(device) for k, v in encode_pairs([r for r, _ in b], pad_id).items()} for b in batches]
    t = time.perf_counter()
    with torch.no_grad(), engine.autocast:
        ref = [sequence_logps(reference, e["input_ids"], e["attention_mask"], e["loss_mask"],
                              length_normalize=cfg.loss.length_normalize) for e in encoded]
    times["reference_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sums = np.zeros(7)  # loss, reward acc, margin, chosen/rejected implicit reward, policy-ref logp, tokens
    for batch, enc, ref_logps in zip(batches, encoded, ref):
        real = torch.tensor([w for _, w in batch], device=device) > 0
        engine.backward_micro(lambda model, enc=enc, ref_logps=ref_logps, real=real:
                              micro_batch_loss(model, enc, ref_logps, real, sums, cfg, scale, n_pairs))
    times["update_s"] = time.perf_counter() - t
    loss, acc, margin, chosen, rejected, logratio, tokens = all_reduce(sums.tolist())
    return {"loss": loss / n_pairs, "reward_accuracy": acc / n_pairs, "dpo_margin": margin / n_pairs,
            "implicit_chosen": chosen / n_pairs, "implicit_rejected": rejected / n_pairs,
            "kl_pairs": logratio / max(tokens, 1.0)}


def step_summary(samples: list[dict], min_margin: float) -> dict[str, Any]:
    """What this rank sends the others about its step's samples: pair and failure counts, the pairs' rows,
    rewards, response lengths, unfinished responses and the first scoring errors."""
    pairs, counts = build_pairs(samples, min_margin=min_margin)
    counts["rm_failures"] = sum(1 for s in samples if s["error"] not in (None, EMPTY))
    counts["empty_responses"] = sum(1 for s in samples if s["error"] == EMPTY)
    return {"counts": counts, "rows": pair_rows(pairs, samples),
            "rewards": [s["reward"] for s in samples if s["reward"] is not None],
            "lengths": [len(s["response_ids"]) for s in samples],
            "unfinished": sum(not s["finished"] for s in samples),
            "errors": [s["error"] for s in samples if s["error"] not in (None, EMPTY)][:3]}


def check_failure_rate(step: int, everyone: list[dict], totals: dict[str, int], max_rate: float) -> None:
    failure_rate = totals["rm_failures"] / max(1, totals["samples"])
    if failure_rate > max_rate:
        errors = [err for e in everyone for err in e["errors"]][:3]
        raise RuntimeError(f"step {step}: reward-model scoring failed for {totals['rm_failures']} of "
                           f"{totals['samples']} samples ({failure_rate:.1%} > rm.max_failure_rate="
                           f"{max_rate}); e.g. {errors}")


def rollout_record(step: int, everyone: list[dict], totals: dict[str, int], rows: list[dict],
                   lr: float) -> dict[str, Any]:
    """The step's record so far: counts, rewards and lengths of all ranks' samples, and of the kept pairs."""
    record: dict[str, Any] = {"kind": "train", "step": step, **{f"n_{k}": v for k, v in totals.items()}}
    rewards = [r for e in everyone for r in e["rewards"]]
    lengths = [n for e in everyone for n in e["lengths"]]
    record.update(reward_mean=float(np.mean(rewards)) if rewards else None,
                  reward_std=float(np.std(rewards)) if rewards else None,
                  response_tokens_mean=float(np.mean(lengths)),
                  no_eos_rate=sum(e["unfinished"] for e in everyone) / max(1, len(lengths)),
                  tie_rate=totals["groups_all_tie"] / max(1, totals["groups"]),
                  pair_rate=len(rows) / max(1, totals["groups"]), lr=lr)
    if rows:
        record.update(chosen_reward=float(np.mean([r["chosen_reward"] for r in rows])),
                      rejected_reward=float(np.mean([r["rejected_reward"] for r in rows])),
                      chosen_tokens=float(np.mean([len(r["chosen_ids"]) for r in rows])),
                      rejected_tokens=float(np.mean([len(r["rejected_ids"]) for r in rows])))
        record["rm_margin"] = record["chosen_reward"] - record["rejected_reward"]
    return record


def step_line(record: dict[str, Any], total_steps: int, n_pairs: int, times: dict[str, float]) -> str:
    return (f"step {record['step']}/{total_steps} reward {record['reward_mean'] or float('nan'):.3f} "
            f"pairs {n_pairs} loss {record.get('loss', float('nan')):.4f} "
            f"acc {record.get('reward_accuracy', float('nan')):.2f} "
            + " ".join(f"{k[:-2]} {v:.1f}s" for k, v in times.items()))


class DPOWorker:
    """One worker's share of an online-DPO run: the policy in its engine, the frozen reference, this rank's
    rollout engine and the metrics log."""

    def __init__(self, config: dict[str, Any]):
        from transformers import AutoTokenizer

        cfg = self.cfg = DPOConfig.model_validate(config["cfg"])
        self.prompts, self.engines, self.total_steps = config["prompts"], config["engines"], config["total_steps"]
        self.queries = {p["id"]: p["query"] for p in self.prompts}
        self.rank, self.world = rc.train_rank()
        seed_all(cfg.seed)
        self.device = rc.train_device()
        tok = AutoTokenizer.from_pretrained(resolve_model(cfg.policy.path))
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        policy = load_policy(cfg.policy.path, self.device, torch.float32)  # fp32 master; engines cast as configured
        policy.config.use_cache = False
        if cfg.policy.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
        policy.train()
        disable_dropout(policy)
        slots = cfg.batch.prompts_per_step // self.world
        self.micro = min(cfg.batch.micro_batch_pairs, slots)
        self.accum = math.ceil(slots / self.micro)
        self.slots = self.micro * self.accum
        self.engine = build_engine(policy, cfg.dist, cfg.optim, micro_batch=self.micro, grad_accum=self.accum,
                                   total_steps=self.total_steps, device=self.device)
        # The reference computes as the policy does (weights dtype, autocast), so their log-probs agree at step 0:
        # the original's bf16 reference against an fp32 policy put noise into every DPO logit.
        self.reference = load_policy(cfg.policy.path, self.device, self.engine.weights_dtype).eval()
        self.reference.requires_grad_(False)
        self.rollout = self.engines[self.rank % len(self.engines)]

    def resume(self) -> int:
        """The step of the run's checkpoint (0 without one), with engine and RNG states restored from it; the
        metrics log opened at it, and the rollout engines given its weights."""
        saved = restore_checkpoint(self.engine, self.rank)
        step = 0 if saved is None else saved["step"]
        self.log = MetricsLog(Location.parse(self.cfg.output_dir), self.rank == 0, step)
        self.log.say(f"{len(self.prompts)} prompts, {self.cfg.batch.prompts_per_step} per step x "
                     f"{self.cfg.policy.n_samples} samples, {self.world} workers x {self.accum} micro-batches of "
                     f"{self.micro} pairs; {self.total_steps} steps")
        if step:
            self.log.say(f"resumed at step {step}; pushing its weights to the rollout engines")
            self.push_weights()
        return step

    def push_weights(self) -> float:
        start = time.perf_counter()
        if self.rank == 0:
            rc.call_all(self.engines, "load_weights", self.engine.full_state_dict())
        barrier()
        return time.perf_counter() - start

    def sample(self, step: int, times: dict[str, float]) -> list[dict]:
        """This rank's share of the step's prompts: n responses each from its rollout engine, scored by the RM."""
        t = time.perf_counter()
        mine = step_prompts(self.prompts, step, self.cfg.batch.prompts_per_step, self.cfg.seed)[self.rank::self.world]
        policy = self.cfg.policy
        samples = rc.call(self.rollout, "generate", mine, policy.n_samples, policy.temperature, policy.top_p)
        times["rollout_s"] = time.perf_counter() - t
        t = time.perf_counter()
        score_samples(samples, self.queries, self.cfg.rm)
        times["scoring_s"] = time.perf_counter() - t
        return samples

    def gather_pairs(self, step: int, samples: list[dict]) -> tuple[list[dict], dict[str, Any]]:
        """All ranks' pairs (sorted by prompt) and the step's record so far; raises when the RM failed too often."""
        summary = step_summary(samples, self.cfg.pairs.min_margin)
        everyone = gather_objects(summary)
        totals = {k: sum(e["counts"][k] for e in everyone) for k in summary["counts"]}
        check_failure_rate(step, everyone, totals, self.cfg.rm.max_failure_rate)
        rows = sorted((r for e in everyone for r in e["rows"]), key=lambda r: r["prompt_id"])
        return rows, rollout_record(step, everyone, totals, rows, self.engine.lr())

    def update(self, rows: list[dict], times: dict[str, float]) -> dict[str, float]:
        """One optimizer step on the pairs, then the new weights to the rollout engines."""
        out = update_step(self.engine, self.reference, deal_slots(rows, self.rank, self.world, self.slots),
                          self.micro, len(rows), self.world * self.accum, self.cfg, self.pad_id, self.device, times)
        times["weight_sync_s"] = self.push_weights()
        return out

    def end_step(self, record: dict[str, Any], n_pairs: int, times: dict[str, float]) -> None:
        """The step's record and console line; a checkpoint when due."""
        step = record["step"]
        (record["max_worker_peak_rss_mb"],) = all_reduce([peak_rss_mb()], dist.ReduceOp.MAX)
        record.update(times, step_s=sum(times.values()))
        self.log.write(record)
        self.log.say(step_line(record, self.total_steps, n_pairs, times))
        if step == self.total_steps or step % self.cfg.checkpoint.every_steps == 0:
            checkpoint_and_report(self.engine, {"step": step}, {"step": step, "reward_mean": record["reward_mean"]},
                                  self.rank)


def dpo_loop(config: dict[str, Any]) -> None:
    worker = DPOWorker(config)
    step = worker.resume()
    while step < worker.total_steps:
        step += 1
        times: dict[str, float] = {}
        samples = worker.sample(step, times)
        rows, record = worker.gather_pairs(step, samples)
        if rows:
            record.update(worker.update(rows, times))
        else:  # nothing to learn from: no optimizer step on any rank (all ranks see the same empty list)
            worker.log.say(f"step {step}: no pairs (all groups tied or unscored); skipping the update")
        worker.end_step(record, len(rows), times)
