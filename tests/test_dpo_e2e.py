"""Online DPO end to end on a local Ray head: a tiny policy sampled by a rollout actor, scored by a tiny RM
deployed on Ray Serve, two DeepSpeed ZeRO-2 workers, weights pushed back to the engine."""
import json
import math

import pytest
import torch

from tests.conftest import CHATLOGS, build_tiny_rm
from wildreward import ray_compat as rc
from wildreward.config import load_config
from wildreward.dpo.config import DPOConfig
from wildreward.dpo.pipeline import run_dpo
from wildreward.serve.app import build_app
from wildreward.serve.config import ServeConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def served_rm(ray_local, tmp_path_factory):
    cfg = ServeConfig(model_dir=build_tiny_rm(tmp_path_factory), name="dpo-rm", port=8393, num_cpus=0.25,
                      max_batch_size=16)
    rc.serve_run(build_app(cfg), name=cfg.name, host=cfg.host, port=cfg.port)
    yield cfg
    rc.serve_shutdown()


def test_online_dpo_end_to_end(served_rm, tiny_lm, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "dpo"
    cfg = load_config(DPOConfig, None, [
        f"output_dir={out}", f"policy.path={tiny_lm}", "policy.max_prompt_tokens=128",
        "policy.max_response_tokens=12", "policy.n_samples=4", "policy.gradient_checkpointing=false",
        "rollout.backend=hf", "rollout.num_cpus_per_engine=0.25", "rm.app_name=dpo-rm",
        "optim.lr=1e-3", "batch.prompts_per_step=4", "batch.micro_batch_pairs=1", "dist.num_workers=2",
        "dist.cpus_per_worker=0.5", "max_steps=2", "epochs=2", "checkpoint.every_steps=1",
        f"prompts.chatlogs=[{CHATLOGS / 'lmsys_chat_sample.jsonl'}]", "prompts.n=14", "eval.held_out_prompts=4"])
    report = run_dpo(cfg)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["n_samples"] == 16 and r["n_groups"] == 4
        assert r["n_groups"] == r["n_groups_too_few"] + r["n_groups_all_tie"] + r["n_pairs_below_margin"] + r["n_pairs"]
        assert r["n_rm_failures"] == 0 and r["reward_mean"] is not None
        for key in ("rollout_s", "scoring_s", "reference_s", "update_s", "weight_sync_s"):
            assert r[key] >= 0
    first = records[0]
    assert first["n_pairs"] > 0
    # Step 1: the policy is still the reference, so every DPO logit is 0 and the loss is log 2.
    assert first["dpo_margin"] == pytest.approx(0.0, abs=1e-6) and first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["chosen_reward"] >= first["rejected_reward"]

    for when in ("before", "after"):
        assert report[when]["prompts"] == 4 and report[when]["unscored"] == 0
        assert 0 <= report[when]["instruction_checks"]["overall"] <= 1
    assert 0 < report["scoring_share"] < 1
    assert (out / "curves.png").stat().st_size > 10_000
    # The exported policy moved away from the initial weights.
    initial = AutoModelForCausalLM.from_pretrained(tiny_lm).state_dict()
    trained = load_file(out / "policy" / "model.safetensors")
    assert any(not torch.equal(trained[k], initial[k]) for k in trained)

    # Re-run with one more step: it resumes from the step-2 checkpoint, and steps 1-2 are neither redone nor
    # duplicated (their records, timings included, are kept as they were).
    resumed = run_dpo(cfg.model_copy(update={"max_steps": 3,
                                             "eval": cfg.eval.model_copy(update={"instruction_checks": False})}))
    again = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [1, 2, 3] and again[:2] == records and resumed["steps"] == 3


def test_unreachable_rm_is_a_clear_error(served_rm, tiny_lm, tmp_path):
    cfg = load_config(DPOConfig, None, [
        f"output_dir={tmp_path}", f"policy.path={tiny_lm}", "rollout.backend=hf", "rm.endpoint=http://127.0.0.1:9",
        "batch.prompts_per_step=2", "dist.num_workers=1", f"prompts.chatlogs=[{CHATLOGS / 'lmsys_chat_sample.jsonl'}]",
        "prompts.n=4", "eval.held_out_prompts=0"])
    with pytest.raises(RuntimeError, match="does not answer"):
        run_dpo(cfg)
