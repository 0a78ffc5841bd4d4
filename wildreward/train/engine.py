"""Two ways to step the model inside a Ray Train worker: DeepSpeed ZeRO 0-3, or plain DDP (the fallback).

Both expose the same four calls to the training loop: ``train_micro_batch`` (forward + backward, optimizer step
on accumulation boundaries), ``eval_logits``, ``save`` and ``load`` (a checkpoint directory per rank; Ray Train
merges the ranks' directories into one checkpoint), plus ``lr``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from wildreward.ordinal import lr_factor, ordinal_loss
from wildreward.train.config import TrainConfig

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "cutpoints_raw")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only, not on biases, norms or the cut-points (as HF Trainer does)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if name.endswith(NO_DECAY) or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def schedule(total_steps: int, cfg: TrainConfig):
    warmup = int(round(cfg.optim.warmup_ratio * total_steps))
    return lambda step: lr_factor(step, total_steps, warmup, cfg.optim.schedule)


def build_engine(model: torch.nn.Module, cfg: TrainConfig, total_steps: int, device: torch.device):
    if cfg.dist.strategy == "deepspeed":
        return DeepSpeedEngine(model, cfg, total_steps)
    return DDPEngine(model, cfg, total_steps, device)


class DeepSpeedEngine:
    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, total_steps: int):
        import deepspeed

        # Ray Train has already created the process group; DeepSpeed reuses it.
        deepspeed.init_distributed(dist_backend="nccl" if cfg.dist.use_gpu else "gloo")
        zero: dict[str, Any] = {"stage": cfg.dist.zero_stage}
        if cfg.dist.offload_optimizer and cfg.dist.zero_stage > 0:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cfg.dist.use_gpu}
        ds_config = {
            "train_batch_size": cfg.batch.global_batch_size,
            "train_micro_batch_size_per_gpu": cfg.batch.micro_batch_size,
            "gradient_accumulation_steps": cfg.grad_accum,
            "gradient_clipping": cfg.optim.max_grad_norm,
            "zero_optimization": zero,
            "bf16": {"enabled": cfg.dist.precision == "bf16"},
            "fp16": {"enabled": cfg.dist.precision == "fp16"},
            # torch_adam: DeepSpeed's fused Adam needs a CUDA build; on CPU use torch's (platform.md §4).
            "optimizer": {"type": "AdamW", "params": {
                "lr": cfg.optim.lr, "betas": list(cfg.optim.betas), "eps": cfg.optim.eps,
                "weight_decay": cfg.optim.weight_decay, "torch_adam": not cfg.dist.use_gpu}},
            "steps_per_print": 1 << 30,
        }
        lr_fn = schedule(total_steps, cfg)
        self.engine, *_ = deepspeed.initialize(
            model=model, model_parameters=param_groups(model, cfg.optim.weight_decay), config=ds_config,
            lr_scheduler=lambda opt: LambdaLR(opt, lr_fn))
        self.device = self.engine.device

    def train_micro_batch(self, batch: dict[str, Any]) -> tuple[float, bool]:
        logits = self.engine(input_ids=batch["input_ids"].to(self.device),
                             attention_mask=batch["attention_mask"].to(self.device))
        loss = ordinal_loss(logits, batch["labels"].to(self.device))
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.backward(loss)
        self.engine.step()
        return float(loss.detach()), boundary

    @torch.no_grad()
    def eval_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        self.engine.eval()
        try:
            return self.engine(input_ids=batch["input_ids"].to(self.device),
                               attention_mask=batch["attention_mask"].to(self.device)).float().cpu()
        finally:
            self.engine.train()

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save(self, directory: Path, client_state: dict[str, Any]) -> None:
        self.engine.save_checkpoint(str(directory), tag="ds", client_state=client_state)

    def load(self, directory: Path) -> dict[str, Any]:
        path, client_state = self.engine.load_checkpoint(str(directory), tag="ds")
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint in {directory}")
        return client_state or {}


class DDPEngine:
    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, total_steps: int, device: torch.device):
        from wildreward import ray_compat as rc

        self.cfg, self.device = cfg, device
        self.model = rc.prepare_ddp_model(model)
        self.module = getattr(self.model, "module", self.model)
        self.optimizer = torch.optim.AdamW(param_groups(self.module, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                           betas=cfg.optim.betas, eps=cfg.optim.eps)
        self.scheduler = LambdaLR(self.optimizer, schedule(total_steps, cfg))
        self.micro = 0
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dist.precision == "bf16")

    def train_micro_batch(self, batch: dict[str, Any]) -> tuple[float, bool]:
        self.micro += 1
        boundary = self.micro % self.cfg.grad_accum == 0
        # Gradients are only all-reduced on the boundary micro-batch.
        sync = contextlib.nullcontext() if boundary or not hasattr(self.model, "no_sync") else self.model.no_sync()
        with sync:
            with self.autocast:
                logits = self.model(input_ids=batch["input_ids"].to(self.device),
                                    attention_mask=batch["attention_mask"].to(self.device))
            loss = ordinal_loss(logits, batch["labels"].to(self.device))
            (loss / self.cfg.grad_accum).backward()
        if boundary:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), boundary

    @torch.no_grad()
    def eval_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        self.model.eval()
        try:
            with self.autocast:
                return self.module(input_ids=batch["input_ids"].to(self.device),
                                   attention_mask=batch["attention_mask"].to(self.device)).float().cpu()
        finally:
            self.model.train()

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, directory: Path, client_state: dict[str, Any]) -> None:
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_rank() == 0:
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "client_state": client_state},
                       Path(directory) / "ddp.pt")

    def load(self, directory: Path) -> dict[str, Any]:
        state = torch.load(Path(directory) / "ddp.pt", map_location=self.device, weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return state["client_state"]


def consolidated_state_dict(checkpoint_dir: str | Path, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Full fp32 weights of the wrapped model from a (possibly ZeRO-sharded) checkpoint, on CPU, without a
    process group: what the export to HF format needs."""
    d = Path(checkpoint_dir)
    if cfg.dist.strategy == "ddp":
        return torch.load(d / "ddp.pt", map_location="cpu", weights_only=False)["model"]
    if cfg.dist.zero_stage == 0:
        states = torch.load(d / "ds" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        return {k: v.float() for k, v in states["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return dict(get_fp32_state_dict_from_zero_checkpoint(str(d), tag="ds"))
