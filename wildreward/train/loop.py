"""The per-worker training loop (runs inside each Ray Train worker).

Every rank reads its own shard of the train set (``get_dataset_shard``), tokenises it in windows of
``length_group_size`` micro-batches, groups rows of similar length into micro-batches (dynamic padding) and
steps the engine. All ranks get the same number of rows (equal split), hence the same number of micro-batches,
so collective calls always line up. Data order is a deterministic function of the seed: a resumed run skips the
micro-batches the checkpoint already consumed and reproduces the uninterrupted run's losses.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from wildreward import ray_compat as rc
from wildreward.ordinal import expected_rating, ordinal_metrics
from wildreward.rm import build_model
from wildreward.storage import Location
from wildreward.train.common import (MetricsLog, all_reduce, checkpoint_and_report, gather_objects, peak_rss_mb,
                                     restore_checkpoint, seed_all)
from wildreward.train.config import TrainConfig
from wildreward.train.data import collate, columns_for, encode_rows, group_by_length
from wildreward.train.engine import build_rm_engine, train_micro_batch


def resume_state(saved: dict[str, Any], plan: dict[str, Any], name: str) -> dict[str, int]:
    """The (step, epoch, micro_in_epoch) of a checkpoint, if it was made under the same ``plan``: the same rows,
    workers, batch sizes and order. Resuming under another plan would silently skip or repeat training rows."""
    if "plan" in saved and saved["plan"] != plan:
        changed = {k: (saved["plan"].get(k), v) for k, v in plan.items() if saved["plan"].get(k) != v}
        raise RuntimeError(f"the checkpoint of run {name!r} was made with other settings (saved, now): {changed}; "
                           "train under another checkpoint.name, or with the settings it was made with")
    return {k: saved[k] for k in ("step", "epoch", "micro_in_epoch")}


def held_out_rows(rank: int, world: int, columns: tuple[str, ...]) -> list[dict]:
    """This rank's slice of the held-out set: every world-th row."""
    rows, index = [], 0
    for table in rc.train_shard("validation").iter_batches(batch_size=1024, batch_format="pyarrow"):
        for row in table.select(list(columns)).to_pylist():
            if index % world == rank:
                rows.append(row)
            index += 1
    return rows


class Validation:
    """This rank's slice of the held-out set, tokenised once, evaluated in length-sorted batches. Every rank runs
    the same number of forward passes (ZeRO-3 gathers parameters collectively), even one with no rows."""

    def __init__(self, cfg: TrainConfig, tokenizer, rows: list[dict], rank: int, world: int, total_rows: int):
        self.cfg, self.tok, self.rank = cfg, tokenizer, rank
        self.examples = encode_rows(rows, tokenizer, cfg.model.max_length, cfg.model.truncation, cfg.model.input)
        self.examples.sort(key=lambda e: -len(e["input_ids"]))
        self.num_batches = math.ceil(math.ceil(total_rows / world) / cfg.batch.eval_batch_size)
        # What a rank runs once its slice is used up (or when it has none: fewer held-out rows than ranks).
        self.filler = self.examples[:1] or encode_rows(
            [{"id": "filler", "history": [], "query": "q", "response": "r", "feedback": "f", "label": 1}], tokenizer,
            cfg.model.max_length, cfg.model.truncation, cfg.model.input)

    def run(self, engine, final: bool, out_dir: Location) -> dict[str, float]:
        bs = self.cfg.batch.eval_batch_size
        ids, labels, logits = [], [], []
        for b in range(self.num_batches):
            chunk = self.examples[b * bs:(b + 1) * bs]
            batch = collate(chunk or self.filler, self.tok.pad_token_id)
            out = engine.eval_logits(batch)
            if chunk:  # an empty chunk was a filler pass to keep the ranks in step
                ids += [e["id"] for e in chunk]
                labels += [e["label"] for e in chunk]
                logits.append(out)
        local = (ids, labels, torch.cat(logits).tolist() if logits else [])
        gathered = gather_objects(local)
        if self.rank != 0:
            return {}
        all_ids = [i for g in gathered for i in g[0]]
        all_labels = np.array([y for g in gathered for y in g[1]])
        all_logits = np.array([x for g in gathered for x in g[2]], dtype=np.float64)
        metrics = ordinal_metrics(all_logits, all_labels)
        if final:
            import pyarrow as pa
            import pyarrow.parquet as pq

            reward = expected_rating(torch.tensor(all_logits)).tolist()
            target = out_dir / "predictions.parquet"
            pq.write_table(pa.table({"id": all_ids, "label": all_labels.tolist(), "logits": all_logits.tolist(),
                                     "reward": reward}), target.path, filesystem=target.fs)
        return metrics


def epoch_micro_batches(shard, cfg: TrainConfig, tok, epoch: int, skip: int, limit: int):
    """This rank's micro-batches of ``epoch``, as (micro-batches consumed after it, batch, rows). Read in windows
    of ``length_group_size`` micro-batches, each grouped by length with a generator seeded by (seed, epoch, window).
    The first ``skip`` (consumed before the checkpoint) and those from ``limit`` on (trailing micro-batches that
    cannot fill a step) are passed over, whole windows of them without tokenising; the shard is read to its end."""
    mb = cfg.batch.micro_batch_size
    micro = 0
    windows = shard.iter_batches(batch_size=cfg.batch.length_group_size * mb, batch_format="pyarrow")
    for window, table in enumerate(windows):
        n_micro = math.ceil(table.num_rows / mb)
        if micro + n_micro <= skip or micro >= limit:
            micro += n_micro
            continue
        rows = table.select(list(columns_for(cfg.model.input))).to_pylist()
        examples = encode_rows(rows, tok, cfg.model.max_length, cfg.model.truncation, cfg.model.input)
        rng = np.random.default_rng([cfg.seed, epoch, window])
        for idx in group_by_length([len(e["input_ids"]) for e in examples], mb, rng):
            micro += 1
            if skip < micro <= limit:
                batch = collate([examples[i] for i in idx], tok.pad_token_id, cfg.batch.pad_to_multiple_of)
                yield micro, batch, len(idx)


class StepMeter:
    """What the micro-batches of one optimizer step add up to, summed over the ranks into the step's train record;
    the learning rate is the one the step uses, read before its first micro-batch."""

    def __init__(self, start_step: int):
        self.acc = np.zeros(6)  # loss*rows, rows, real tokens, padded tokens, truncated, response cut
        self.lr, self.start_step = 0.0, start_step
        self.t_start = self.t_last = time.perf_counter()

    def before(self, engine) -> None:
        if not self.acc[1]:
            self.lr = engine.lr()  # the rate this optimizer step uses (the scheduler advances after it)

    def add(self, loss: float, n: int, batch: dict[str, Any]) -> None:
        self.acc += [loss * n, n, batch["real_tokens"], batch["padded_tokens"], batch["truncated"],
                     batch["response_cut"]]

    def record(self, step: int, epoch: int) -> dict[str, Any]:
        loss_sum, rows, real, padded, trunc, cut = all_reduce(self.acc.tolist())
        (peak_rss,) = all_reduce([peak_rss_mb()], dist.ReduceOp.MAX)
        self.acc[:] = 0
        now = time.perf_counter()
        record = {"kind": "train", "step": step, "epoch": epoch + 1, "loss": loss_sum / rows,
                  "lr": self.lr, "samples_per_s": rows / (now - self.t_last),
                  "tokens_per_s": real / (now - self.t_last), "padding_efficiency": real / padded,
                  "truncation_rate": trunc / rows, "response_cut_rate": cut / rows,
                  "max_worker_peak_rss_mb": peak_rss}
        self.t_last = now
        return record

    def eta(self, step: int, total_steps: int) -> float:
        return (self.t_last - self.t_start) / (step - self.start_step) * (total_steps - step)


def progress_line(record: dict[str, Any], total_steps: int, eta: float) -> str:
    return (f"step {record['step']}/{total_steps} epoch {record['epoch']} loss {record['loss']:.4f} "
            f"lr {record['lr']:.2e} {record['samples_per_s']:.1f} samples/s "
            f"{record['tokens_per_s']:.0f} tok/s pad-eff {record['padding_efficiency']:.2f} "
            f"trunc {record['truncation_rate']:.1%} eta {eta:.0f}s")


class RMTrainer:
    """One worker's share of a training run: model and engine, the position in the data (``state``: step, epoch,
    micro-batches consumed in that epoch), the metrics log and this rank's slice of the held-out set."""

    def __init__(self, config: dict[str, Any]):
        cfg = self.cfg = TrainConfig.model_validate(config["cfg"])
        self.config, self.out_dir, self.total_steps = config, Location.parse(cfg.output_dir), config["total_steps"]
        self.rank, self.world = rc.train_rank()
        seed_all(cfg.seed)
        model, self.tok = build_model(cfg.model.backbone, cfg.model.head, cfg.model.num_levels,
                                      dropout=cfg.model.dropout, trust_remote_code=cfg.model.trust_remote_code)
        if cfg.model.gradient_checkpointing:
            model.backbone.gradient_checkpointing_enable()
        device = rc.train_device()
        self.engine = build_rm_engine(model, cfg, self.total_steps, device)
        self.pos_weight = None if config["pos_weight"] is None else torch.tensor(config["pos_weight"], device=device)
        # What a saved position (step, micro-batch) means; a checkpoint made under another plan cannot be resumed.
        self.plan = {"train_rows": config["train_rows"], "workers": self.world,
                     "micro_batch_size": cfg.batch.micro_batch_size, "grad_accum": cfg.grad_accum,
                     "length_group_size": cfg.batch.length_group_size, "seed": cfg.seed,
                     "total_steps": self.total_steps}
        saved = restore_checkpoint(self.engine, self.rank)
        self.state = ({"step": 0, "epoch": 0, "micro_in_epoch": 0} if saved is None
                      else resume_state(saved, self.plan, cfg.checkpoint.name))
        self.log = MetricsLog(self.out_dir, self.rank == 0, self.state["step"])
        self.announce()
        self.validation = (Validation(cfg, self.tok, held_out_rows(self.rank, self.world, columns_for(cfg.model.input)),
                                      self.rank, self.world, config["test_rows"]) if config["test_rows"] else None)

    def announce(self) -> None:
        cfg, state = self.cfg, self.state
        if state["step"]:
            self.log.say(f"resumed from step {state['step']} (epoch {state['epoch'] + 1}, "
                         f"micro-batch {state['micro_in_epoch']})")
        self.log.say(f"{self.config['train_rows']} rows, {self.world} workers x micro-batch "
                     f"{cfg.batch.micro_batch_size} x accumulation {cfg.grad_accum} = global batch "
                     f"{cfg.batch.global_batch_size}; {self.config['steps_per_epoch']} steps/epoch, "
                     f"{self.total_steps} steps total")

    def run(self) -> None:
        """From ``state`` to the last step: each micro-batch through the engine, and after each optimizer step
        its record, evaluation and checkpoint (:meth:`end_step`)."""
        state, shard = self.state, rc.train_shard("train")
        meter = StepMeter(state["step"])
        epoch_micro = self.config["steps_per_epoch"] * self.cfg.grad_accum  # whole steps only
        for epoch in range(state["epoch"], self.cfg.epochs):
            skip = state["micro_in_epoch"] if epoch == state["epoch"] else 0
            for micro, batch, n in epoch_micro_batches(shard, self.cfg, self.tok, epoch, skip, epoch_micro):
                meter.before(self.engine)
                loss, boundary = train_micro_batch(self.engine, batch, self.pos_weight)
                meter.add(loss, n, batch)
                if boundary:
                    state.update(step=state["step"] + 1, epoch=epoch, micro_in_epoch=micro)
                    if self.end_step(meter.record(state["step"], epoch), meter):
                        return
            state.update(epoch=epoch + 1, micro_in_epoch=0)

    def end_step(self, record: dict[str, Any], meter: StepMeter) -> bool:
        """After an optimizer step: its record and console line, the injected failure, evaluation and checkpoint
        when due. True after the last step."""
        cfg, step = self.cfg, record["step"]
        self.log.write(record)
        if step % cfg.log_every_steps == 0 or step == self.total_steps:
            self.log.say(progress_line(record, self.total_steps, meter.eta(step, self.total_steps)))
        self.inject_failure(step)
        final = step == self.total_steps
        metrics: dict[str, Any] = {"step": step, "loss": record["loss"]}
        if self.validation and (final or (cfg.eval_every_steps and step % cfg.eval_every_steps == 0)):
            metrics.update(self.evaluate(step, final))
        if final or step % cfg.checkpoint.every_steps == 0:
            checkpoint_and_report(self.engine, {**self.state, "plan": self.plan}, metrics, self.rank)
        return final

    def inject_failure(self, step: int) -> None:
        """``fail_once_at_step``: one rank raises at that step, once per run name (a marker file remembers)."""
        if self.cfg.fail_once_at_step == step and self.rank == min(1, self.world - 1):
            run_dir = Location.parse(self.config["storage_path"]) / self.cfg.checkpoint.name
            marker = run_dir / f".fault_injected_step{step}"
            if not marker.exists():
                marker.touch()
                raise RuntimeError(f"injected failure at step {step} on rank {self.rank} (fail_once_at_step)")

    def evaluate(self, step: int, final: bool) -> dict[str, float]:
        """The held-out metrics (rank 0 logs them), as ``eval_*`` entries of the step's report."""
        result = self.validation.run(self.engine, final, self.out_dir)
        if not result:
            return {}
        self.log.write({"kind": "eval", "step": step, **result})
        self.log.say("eval step {}: ".format(step) + " ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "n"))
        return {f"eval_{k}": v for k, v in result.items()}


def train_loop(config: dict[str, Any]) -> None:
    trainer = RMTrainer(config)
    if trainer.state["step"] < trainer.total_steps:
        trainer.run()
