"""Rollout engines: sampling returns the generated token ids; pushed weights change what the engine generates,
and it then generates exactly what a fresh engine built from those weights does."""
import pytest
import torch

from wildreward.dpo.rollout import RolloutEngine

pytestmark = pytest.mark.slow  # two engines per test, generating (the hf one ~10 s on 2 CPUs)

PROMPTS = [{"id": "a", "messages": [{"role": "user", "content": "Hello, how are you today?"}]},
           {"id": "b", "messages": [{"role": "user", "content": "Name a prime number."}]}]


def new_weights(path, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(tmp_path / "new", safe_serialization=True)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(path).save_pretrained(tmp_path / "new")
    return {k: v.clone() for k, v in model.state_dict().items()}, str(tmp_path / "new")


def engine(path, backend):
    return RolloutEngine(path, backend, max_prompt_tokens=128, max_response_tokens=8, use_chat_template=True,
                         seed=0)


def sync_and_compare(path, backend, tmp_path):
    rollout = engine(path, backend)
    before = rollout.generate(PROMPTS, 3, 1.0, 1.0)
    assert [(s["prompt_id"], s["sample_index"]) for s in before] == [(p, k) for p in "ab" for k in range(3)]
    for s in before:
        assert s["prompt_ids"] and 1 <= len(s["response_ids"]) <= 8
        assert s["finished"] == (s["response_ids"][-1] in rollout.stop_ids)
    state, new_dir = new_weights(path, tmp_path)
    assert rollout.load_weights(state) > 0
    rollout.calls = 0  # same sampling seed as the first call
    after = rollout.generate(PROMPTS, 3, 1.0, 1.0)
    assert [s["response_ids"] for s in after] != [s["response_ids"] for s in before]
    fresh = engine(new_dir, backend).generate(PROMPTS, 3, 1.0, 1.0)
    assert [s["response_ids"] for s in after] == [s["response_ids"] for s in fresh]


def test_hf_engine_weight_sync(tiny_lm, tmp_path):
    sync_and_compare(tiny_lm, "hf", tmp_path)


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_vllm_engine_weight_sync(tiny_lm, tmp_path):
    sync_and_compare(tiny_lm, "vllm", tmp_path)
