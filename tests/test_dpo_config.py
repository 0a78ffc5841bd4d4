"""DPO config: the paper's defaults, overrides that keep them, and validation."""
import pytest

from wildreward.config import ConfigError, load_config
from wildreward.dpo.config import DPOConfig


def test_paper_defaults():
    cfg = DPOConfig()
    assert (cfg.policy.n_samples, cfg.policy.temperature, cfg.policy.top_p) == (8, 1.0, 1.0)
    assert (cfg.policy.max_prompt_tokens, cfg.policy.max_response_tokens) == (1024, 4096)
    assert (cfg.loss.beta, cfg.loss.label_smoothing, cfg.loss.loss_type, cfg.loss.length_normalize) == \
        (0.1, 0.0, "sigmoid", False)
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.warmup_ratio, cfg.optim.max_grad_norm) == \
        (5e-7, "constant", 0.0, 1.0)
    assert (cfg.optim.weight_decay, cfg.optim.betas) == (0.01, (0.9, 0.999))
    assert cfg.batch.prompts_per_step == 64 and cfg.pairs.min_margin == 0.0 and cfg.epochs == 1
    assert cfg.checkpoint.every_steps == 100 and cfg.checkpoint.name == "wildreward-dpo"


def test_overriding_one_optim_key_keeps_the_dpo_defaults():
    cfg = load_config(DPOConfig, overrides=["optim.weight_decay=0.0", "checkpoint.num_to_keep=5",
                                            "dist.num_workers=4"])
    assert (cfg.optim.weight_decay, cfg.optim.lr, cfg.optim.schedule) == (0.0, 5e-7, "constant")
    assert (cfg.checkpoint.num_to_keep, cfg.checkpoint.every_steps) == (5, 100)


@pytest.mark.parametrize("overrides, message", [
    (["policy.n_samples=1"], "policy.n_samples"),
    (["batch.prompts_per_step=63"], "multiple of dist.num_workers"),
    (["loss.loss_type=ipo", "loss.label_smoothing=0.1"], "sigmoid only"),
    (["loss.label_smoothing=0.5"], "loss.label_smoothing"),
    (["prompts.paths=[a.jsonl]", "prompts.chatlogs=[logs]"], "not both"),
    (["rm.app_name=null"], "rm.endpoint or rm.app_name"),
    (["policy.temprature=0.7"], "unknown key"),
    (["rollout.backend=sglang"], "rollout.backend"),
])
def test_validation(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DPOConfig, overrides=overrides)
