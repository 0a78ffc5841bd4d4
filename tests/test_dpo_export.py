"""The DPO policy export on its own (moved out of test_dpo_e2e.py, which runs online DPO on Ray)."""
import pytest
import torch

from wildreward.dpo.config import DPOConfig


def test_policy_export_refuses_a_checkpoint_that_does_not_fit(tiny_lm, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    import wildreward.train.engine as engine
    from wildreward.dpo.pipeline import export_policy

    trained = {k: v + 0.5 for k, v in AutoModelForCausalLM.from_pretrained(tiny_lm).state_dict().items()
               if k != "lm_head.weight"}  # tied to the input embedding: a checkpoint may leave it out
    cfg = DPOConfig(policy={"path": tiny_lm})
    monkeypatch.setattr(engine, "consolidated_state_dict", lambda ckpt, cfg: trained)
    export_policy(tmp_path, cfg, tmp_path / "policy")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "policy").state_dict()
    assert all(torch.equal(exported[k], v) for k, v in trained.items())
    # keys under another prefix would leave the untrained weights in place: an error, not a silent export
    prefixed = {f"module.{k}": v for k, v in trained.items()}
    monkeypatch.setattr(engine, "consolidated_state_dict", lambda ckpt, cfg: prefixed)
    with pytest.raises(RuntimeError, match="does not fit"):
        export_policy(tmp_path, cfg, tmp_path / "wrong")
