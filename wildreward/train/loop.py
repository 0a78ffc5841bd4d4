"""The per-worker training loop (runs inside each Ray Train worker).

Every rank reads its own shard of the train set (``get_dataset_shard``), tokenises it in windows of
``length_group_size`` micro-batches, groups rows of similar length into micro-batches (dynamic padding) and
steps the engine. All ranks get the same number of rows (equal split), hence the same number of micro-batches,
so collective calls always line up. Data order is a deterministic function of the seed: a resumed run skips the
micro-batches the checkpoint already consumed and reproduces the uninterrupted run's losses.
"""
from __future__ import annotations

import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from wildreward import ray_compat as rc
from wildreward.ordinal import expected_rating, ordinal_metrics
from wildreward.rm import build_model
from wildreward.storage import Location
from wildreward.train.config import TrainConfig
from wildreward.train.data import collate, columns_for, encode_rows, group_by_length
from wildreward.train.engine import build_rm_engine, train_micro_batch

def all_reduce(values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        # NCCL reduces only CUDA tensors (Ray Train's GPU process group has no CPU backend).
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
        t = t.to(device)
        dist.all_reduce(t, op=op)
    return t.tolist()


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def gather_objects(obj: Any) -> list[Any]:
    if dist.is_initialized() and dist.get_world_size() > 1:
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class MetricsLog:
    """Rank 0's metrics: ``metrics.jsonl`` (train and eval records), TensorBoard when installed, console lines.
    On resume, records after the restored step are dropped so the file has no duplicate steps."""

    def __init__(self, out_dir: Location, active: bool, resume_step: int):
        self.active, self.path, self.tb = active, out_dir / "metrics.jsonl", None
        self.lines: list[str] = []
        if not active:
            return
        out_dir.mkdir()
        if self.path.exists():
            self.lines = [line for line in self.path.read_text().splitlines()
                          if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in self.lines))
        if not out_dir.is_local:  # TensorBoard event files need a local disk
            return
        for module in ("torch.utils.tensorboard", "tensorboardX"):
            try:
                writer = __import__(module, fromlist=["SummaryWriter"]).SummaryWriter
                self.tb = writer(str(out_dir / "tensorboard"), purge_step=resume_step + 1)
                break
            except ImportError:
                continue

    def write(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        if self.path.is_local:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        else:  # object stores cannot append: rewrite the (small) file
            self.lines.append(json.dumps(record))
            self.path.write_text("".join(line + "\n" for line in self.lines))
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch") and math.isfinite(value):
                    self.tb.add_scalar(f"{record['kind']}/{key}", value, record["step"])
            self.tb.flush()

    def say(self, msg: str) -> None:
        if self.active:  # not print(): Ray Train patches it and the line would reach the driver twice
            sys.stdout.write(f"[train] {msg}\n")
            sys.stdout.flush()


def read_metrics(out_dir: str | Path | Location) -> list[dict[str, Any]]:
    """The records a :class:`MetricsLog` wrote to ``out_dir``."""
    text = (Location.parse(out_dir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


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


def train_loop(config: dict[str, Any]) -> None:
    cfg = TrainConfig.model_validate(config["cfg"])
    train_rows, test_rows = config["train_rows"], config["test_rows"]
    out_dir = Location.parse(cfg.output_dir)
    rank, world = rc.train_rank()
    seed_all(cfg.seed)
    model, tok = build_model(cfg.model.backbone, cfg.model.head, cfg.model.num_levels, dropout=cfg.model.dropout,
                             trust_remote_code=cfg.model.trust_remote_code)
    if cfg.model.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable()
    mb, accum = cfg.batch.micro_batch_size, cfg.grad_accum
    window_rows = cfg.batch.length_group_size * mb
    steps_per_epoch, total_steps = config["steps_per_epoch"], config["total_steps"]
    device = rc.train_device()
    engine = build_rm_engine(model, cfg, total_steps, device)
    pos_weight = None if config["pos_weight"] is None else torch.tensor(config["pos_weight"], device=device)

    state = {"step": 0, "epoch": 0, "micro_in_epoch": 0}
    # What a saved position (step, micro-batch) means; a checkpoint made under another plan cannot be resumed.
    plan = {"train_rows": train_rows, "workers": world, "micro_batch_size": mb, "grad_accum": accum,
            "length_group_size": cfg.batch.length_group_size, "seed": cfg.seed, "total_steps": total_steps}
    with rc.restored_checkpoint() as ckpt:
        if ckpt is not None:
            state = resume_state(engine.load(ckpt), plan, cfg.checkpoint.name)  # loads once: optimizer state too
            rng_file = ckpt / "rng" / f"rank{rank}.pt"
            if rng_file.exists():
                _set_rng_state(torch.load(rng_file, weights_only=False))
    log = MetricsLog(out_dir, rank == 0, state["step"])
    if state["step"]:
        log.say(f"resumed from step {state['step']} (epoch {state['epoch'] + 1}, "
                f"micro-batch {state['micro_in_epoch']})")
    log.say(f"{train_rows} rows, {world} workers x micro-batch {mb} x accumulation {accum} = global batch "
            f"{cfg.batch.global_batch_size}; {steps_per_epoch} steps/epoch, {total_steps} steps total")
    validation = (Validation(cfg, tok, held_out_rows(rank, world, columns_for(cfg.model.input)), rank, world,
                             test_rows) if test_rows else None)
    if state["step"] >= total_steps:
        return

    def checkpoint(metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            engine.save(Path(tmp), {**state, "plan": plan})
            (Path(tmp) / "rng").mkdir(exist_ok=True)
            torch.save(_rng_state(), Path(tmp) / "rng" / f"rank{rank}.pt")
            if dist.is_initialized():
                dist.barrier()
            rc.report(metrics, checkpoint_dir=tmp)

    shard = rc.train_shard("train")
    acc = np.zeros(6)  # loss*rows, rows, real tokens, padded tokens, truncated, response cut
    t_start = t_last = time.perf_counter()
    start_step = state["step"]
    for epoch in range(state["epoch"], cfg.epochs):
        skip = state["micro_in_epoch"] if epoch == state["epoch"] else 0
        micro = 0
        epoch_micro = steps_per_epoch * accum  # trailing micro-batches that cannot fill a step are not trained
        for window, table in enumerate(shard.iter_batches(batch_size=window_rows, batch_format="pyarrow")):
            n_micro = math.ceil(table.num_rows / mb)
            if micro + n_micro <= skip or micro >= epoch_micro:  # consumed before the checkpoint / leftover
                micro += n_micro
                continue
            rows = table.select(list(columns_for(cfg.model.input))).to_pylist()
            examples = encode_rows(rows, tok, cfg.model.max_length, cfg.model.truncation, cfg.model.input)
            rng = np.random.default_rng([cfg.seed, epoch, window])
            for idx in group_by_length([len(e["input_ids"]) for e in examples], mb, rng):
                if micro < skip or micro >= epoch_micro:
                    micro += 1
                    continue
                batch = collate([examples[i] for i in idx], tok.pad_token_id, cfg.batch.pad_to_multiple_of)
                if not acc[1]:
                    lr = engine.lr()  # the rate this optimizer step uses (the scheduler advances after it)
                loss, boundary = train_micro_batch(engine, batch, pos_weight)
                micro += 1
                n = len(idx)
                acc += [loss * n, n, batch["real_tokens"], batch["padded_tokens"], batch["truncated"],
                        batch["response_cut"]]
                if not boundary:
                    continue
                state.update(step=state["step"] + 1, epoch=epoch, micro_in_epoch=micro)
                step = state["step"]
                loss_sum, rows, real, padded, trunc, cut = all_reduce(acc.tolist())
                (peak_rss,) = all_reduce([peak_rss_mb()], dist.ReduceOp.MAX)
                acc[:] = 0
                now = time.perf_counter()
                record = {"kind": "train", "step": step, "epoch": epoch + 1, "loss": loss_sum / rows,
                          "lr": lr, "samples_per_s": rows / (now - t_last),
                          "tokens_per_s": real / (now - t_last), "padding_efficiency": real / padded,
                          "truncation_rate": trunc / rows, "response_cut_rate": cut / rows,
                          "max_worker_peak_rss_mb": peak_rss}
                t_last = now
                log.write(record)
                if step % cfg.log_every_steps == 0 or step == total_steps:
                    eta = (now - t_start) / (step - start_step) * (total_steps - step)
                    log.say(f"step {step}/{total_steps} epoch {epoch + 1} loss {record['loss']:.4f} "
                            f"lr {record['lr']:.2e} {record['samples_per_s']:.1f} samples/s "
                            f"{record['tokens_per_s']:.0f} tok/s pad-eff {record['padding_efficiency']:.2f} "
                            f"trunc {record['truncation_rate']:.1%} eta {eta:.0f}s")
                if cfg.fail_once_at_step == step and rank == min(1, world - 1):
                    marker = (Location.parse(config["storage_path"]) / cfg.checkpoint.name
                              / f".fault_injected_step{step}")
                    if not marker.exists():
                        marker.touch()
                        raise RuntimeError(f"injected failure at step {step} on rank {rank} (fail_once_at_step)")
                final = step == total_steps
                metrics: dict[str, Any] = {"step": step, "loss": record["loss"]}
                if validation and (final or (cfg.eval_every_steps and step % cfg.eval_every_steps == 0)):
                    result = validation.run(engine, final, out_dir)
                    if result:
                        log.write({"kind": "eval", "step": step, **result})
                        log.say("eval step {}: ".format(step) + " ".join(
                            f"{k} {v:.4f}" for k, v in result.items() if k != "n"))
                        metrics.update({f"eval_{k}": v for k, v in result.items()})
                if final or step % cfg.checkpoint.every_steps == 0:
                    checkpoint(metrics)
                if final:
                    return
        state.update(epoch=epoch + 1, micro_in_epoch=0)
