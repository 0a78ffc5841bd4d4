"""Two ways to step the model inside a Ray Train worker: DeepSpeed ZeRO 0-3, or plain DDP (the fallback).

Both expose the same calls to a training loop: ``backward_micro`` (a loss computed from the model, backward,
optimizer step on accumulation boundaries; ``train_micro_batch`` below feeds it the ordinal loss), ``eval_logits``,
``save`` and ``load`` (a checkpoint directory per rank; Ray Train merges the ranks' directories into one
checkpoint), ``lr`` and ``module`` (the bare model). The RM trainer and online DPO both build them.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from wildreward.ordinal import lr_factor, ordinal_loss
from wildreward.train.config import DistConfig, OptimConfig, TrainConfig

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "cutpoints_raw")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only, not on biases, norms or the cut-points (as HF Trainer does)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if name.endswith(NO_DECAY) or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def schedule(total_steps: int, optim: OptimConfig):
    warmup = int(round(optim.warmup_ratio * total_steps))
    return lambda step: lr_factor(step, total_steps, warmup, optim.schedule)


def build_engine(model: torch.nn.Module, dist_cfg: DistConfig, optim: OptimConfig, *, micro_batch: int,
                 grad_accum: int, total_steps: int, device: torch.device):
    """``grad_accum`` micro-batches of ``micro_batch`` rows per worker make one optimizer step."""
    if dist_cfg.strategy == "deepspeed":
        return DeepSpeedEngine(model, dist_cfg, optim, micro_batch, grad_accum, total_steps)
    return DDPEngine(model, dist_cfg, optim, grad_accum, total_steps, device)


def build_rm_engine(model: torch.nn.Module, cfg: TrainConfig, total_steps: int, device: torch.device):
    return build_engine(model, cfg.dist, cfg.optim, micro_batch=cfg.batch.micro_batch_size,
                        grad_accum=cfg.grad_accum, total_steps=total_steps, device=device)


def train_micro_batch(engine, batch: dict[str, Any], pos_weight: torch.Tensor | None = None) -> tuple[float, bool]:
    """One RM micro-batch through either engine: (loss, whether the optimizer stepped). ``pos_weight``
    (per-threshold weights) is expected on the engine's device already: it is the same every step."""
    device = engine.device
    return engine.backward_micro(lambda model: ordinal_loss(
        model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)),
        batch["labels"].to(device), pos_weight))


def jit_arch_list(value: str) -> str:
    """``TORCH_CUDA_ARCH_LIST`` as DeepSpeed's JIT op builder parses it (0.19: ``X.Y`` or ``X.Y+PTX`` only).
    CUDA images often name arch-specific targets such as ``9.0a`` (Hopper's wgmma), on which that builder fails
    with ``invalid literal for int()``; its ops only need the base architecture."""
    entries = value.replace(";", " ").split()
    return ";".join(dict.fromkeys(re.sub(r"^(\d+\.\d+)[a-z]+", r"\1", e) for e in entries))


def deepspeed_safe_globals() -> list:
    """The DeepSpeed classes its checkpoints hold besides tensors and containers (ZeRO optimizer states: the loss
    scaler, the stage enum, fragment addresses): plain data, allowlisted so those files load weights-only."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def load_weights_only(path: str | Path, map_location: Any = None, deepspeed_file: bool = False) -> Any:
    """``torch.load`` that never runs code from the file: tensors, plain containers and, for DeepSpeed's files,
    the classes of :func:`deepspeed_safe_globals`; anything else is refused (``pickle.UnpicklingError``)."""
    with torch.serialization.safe_globals(deepspeed_safe_globals() if deepspeed_file else []):
        return torch.load(path, map_location=map_location, weights_only=True)


@contextlib.contextmanager
def deepspeed_loads_weights_only():
    """While DeepSpeed reads a checkpoint (``load_checkpoint``, ``zero_to_fp32``), its own ``torch.load(...,
    weights_only=False)`` calls load weights-only: it has no option for that, so ``torch.load`` is swapped for
    the duration (the loads are on the calling thread, before or after training)."""
    original = torch.load

    def weights_only_load(f, map_location=None, *args, weights_only=None, **kwargs):
        with torch.serialization.safe_globals(deepspeed_safe_globals()):
            return original(f, map_location, *args, weights_only=True, **kwargs)

    torch.load = weights_only_load
    try:
        yield
    finally:
        torch.load = original


class DeepSpeedEngine:
    def __init__(self, model: torch.nn.Module, dist_cfg: DistConfig, optim: OptimConfig, micro_batch: int,
                 grad_accum: int, total_steps: int):
        import deepspeed
        import torch.distributed as dist

        if dist_cfg.use_gpu and os.environ.get("TORCH_CUDA_ARCH_LIST"):  # seen: 9.0a on an H100 image
            os.environ["TORCH_CUDA_ARCH_LIST"] = jit_arch_list(os.environ["TORCH_CUDA_ARCH_LIST"])
        # Ray Train has already created the process group; DeepSpeed reuses it.
        deepspeed.init_distributed(dist_backend="nccl" if dist_cfg.use_gpu else "gloo")
        world = dist.get_world_size() if dist.is_initialized() else 1
        # DeepSpeed's default 5e8-element communication buckets are 2 GB each in fp32; 5e7 keeps small models
        # (and CPU runs) from paying gigabytes for buffers at little cost in extra collectives.
        zero: dict[str, Any] = {"stage": dist_cfg.zero_stage, "reduce_bucket_size": int(5e7),
                                "allgather_bucket_size": int(5e7)}
        if dist_cfg.offload_optimizer and dist_cfg.zero_stage > 0:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": dist_cfg.use_gpu}
        ds_config = {
            "train_batch_size": micro_batch * grad_accum * world,
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": grad_accum,
            "gradient_clipping": optim.max_grad_norm,
            "zero_optimization": zero,
            "bf16": {"enabled": dist_cfg.precision == "bf16"},
            "fp16": {"enabled": dist_cfg.precision == "fp16"},
            # torch_adam: DeepSpeed's fused Adam needs a CUDA build; on CPU use torch's (platform.md §4).
            "optimizer": {"type": "AdamW", "params": {
                "lr": optim.lr, "betas": list(optim.betas), "eps": optim.eps,
                "weight_decay": optim.weight_decay, "torch_adam": not dist_cfg.use_gpu}},
            "steps_per_print": 1 << 30,
        }
        lr_fn = schedule(total_steps, optim)
        self.zero_stage = dist_cfg.zero_stage
        # How the model computes: DeepSpeed casts the weights themselves, with no autocast around the forward.
        self.weights_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dist_cfg.precision, torch.float32)
        self.autocast = contextlib.nullcontext()
        self.engine, *_ = deepspeed.initialize(
            model=model, model_parameters=param_groups(model, optim.weight_decay), config=ds_config,
            lr_scheduler=lambda opt: LambdaLR(opt, lr_fn))
        self.device = self.engine.device

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def backward_micro(self, compute_loss: Callable[[torch.nn.Module], torch.Tensor]) -> tuple[float, bool]:
        """One micro-batch: ``compute_loss(model)``, backward; the optimizer steps on accumulation boundaries
        (DeepSpeed divides the loss by the accumulation count)."""
        loss = compute_loss(self.engine)
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.backward(loss)
        self.engine.step()
        return float(loss.detach()), boundary

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on CPU, on every rank (ZeRO 0-2 keep full parameters on each rank). Copies:
        DeepSpeed's parameters are views into one flat buffer, and serialising a view (Ray does, to push weights
        to the rollout engines) writes the whole buffer for every tensor: 20+ GB for a 0.6 GB model."""
        if self.zero_stage == 3:
            raise NotImplementedError("full_state_dict with ZeRO-3 (parameters are partitioned): use stage <= 2")
        return {k: v.detach().to("cpu", copy=True) for k, v in self.engine.module.state_dict().items()}

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
        with deepspeed_loads_weights_only():
            path, client_state = self.engine.load_checkpoint(str(directory), tag="ds")
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint in {directory}")
        return client_state or {}


class DDPEngine:
    def __init__(self, model: torch.nn.Module, dist_cfg: DistConfig, optim: OptimConfig, grad_accum: int,
                 total_steps: int, device: torch.device):
        from wildreward import ray_compat as rc

        self.grad_accum, self.max_grad_norm, self.device = grad_accum, optim.max_grad_norm, device
        self.model = rc.prepare_ddp_model(model)
        self.module = getattr(self.model, "module", self.model)
        self.optimizer = torch.optim.AdamW(param_groups(self.module, optim.weight_decay), lr=optim.lr,
                                           betas=optim.betas, eps=optim.eps)
        self.scheduler = LambdaLR(self.optimizer, schedule(total_steps, optim))
        self.micro = 0
        # How the model computes: fp32 weights, bf16 matmuls under autocast when configured.
        self.weights_dtype = torch.float32
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dist_cfg.precision == "bf16")

    def backward_micro(self, compute_loss: Callable[[torch.nn.Module], torch.Tensor]) -> tuple[float, bool]:
        self.micro += 1
        boundary = self.micro % self.grad_accum == 0
        # Gradients are only all-reduced on the boundary micro-batch.
        sync = contextlib.nullcontext() if boundary or not hasattr(self.model, "no_sync") else self.model.no_sync()
        with sync:
            with self.autocast:
                loss = compute_loss(self.model)
            (loss / self.grad_accum).backward()
        if boundary:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), boundary

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}  # not the live ones

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
        state = load_weights_only(Path(directory) / "ddp.pt", map_location=self.device)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return state["client_state"]


def consolidated_state_dict(checkpoint_dir: str | Path, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Full fp32 weights of the wrapped model from a (possibly ZeRO-sharded) checkpoint, on CPU, without a
    process group: what the export to HF format needs."""
    d = Path(checkpoint_dir)
    if cfg.dist.strategy == "ddp":
        return load_weights_only(d / "ddp.pt", map_location="cpu")["model"]
    if cfg.dist.zero_stage == 0:
        states = load_weights_only(d / "ds" / "mp_rank_00_model_states.pt", map_location="cpu", deepspeed_file=True)
        return {k: v.float() for k, v in states["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with deepspeed_loads_weights_only():
        return dict(get_fp32_state_dict_from_zero_checkpoint(str(d), tag="ds"))
