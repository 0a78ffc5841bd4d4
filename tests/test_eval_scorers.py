"""`wildreward eval` scores any reward model: tiny checkpoints saved here (fixed seeds) of each kind, checked
against a direct forward of the model on the text written out by hand; kind detection and clear errors for bad
checkpoints; an OpenRLHF-style /get_reward service run in this process; and one run_eval on Ray with every kind
as its own report row."""
import functools
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import SHARED, build_tiny_rm
from tests.test_template import WITH_HISTORY
from wildreward.config import ConfigError, load_config
from wildreward.eval.config import EvalConfig, ScorerSpec
from wildreward.eval.pipeline import run_eval
from wildreward.eval.score import PROBE_TEXT, RewardScorer, resolve_scorers, score_examples
from wildreward.eval.scorers import (ReleaseRewardModel, ScalarRewardModel, detect_kind, load_scorer,
                                     resolve_kind)
from wildreward.serve.client import RewardServiceError
from wildreward.template import build_rm_text

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
HISTORY = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]
EXAMPLES = [
    {"history": HISTORY, "query": "Sort [3,1,2] in Python", "response": "sorted([3, 1, 2])"},
    {"history": [], "query": "what is 2 + 2?", "response": "4, since two plus two makes four in base ten."},
    {"history": None, "query": "say hi", "response": "hi"},
]
# EXAMPLES[0] rendered by CHAT_TEMPLATE, by hand.
SCALAR_TEXT = ("<|user|>hi\n<|assistant|>hello there\n<|user|>Sort [3,1,2] in Python\n"
               "<|assistant|>sorted([3, 1, 2])\n")
# EXAMPLES[0] in the original WildReward template: the fixture written out by hand from paper.md §2.2.
RELEASE_TEXT = WITH_HISTORY


def minilm_tokenizer():
    from transformers import AutoTokenizer

    from wildreward.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("minilm"))


def save_scalar_rm(path, pad: bool = True) -> str:
    """A 1-label decoder (last-token pooling) with a chat template; ``pad=False``: no pad id in its config."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = minilm_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, num_labels=1,
                         pad_token_id=tok.pad_token_id if pad else None, initializer_range=0.2)
    LlamaForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


def save_release_rm(path, num_labels: int = 3) -> str:
    """A 3-logit encoder classifier, as the released WildReward checkpoints are (a tiny BERT here)."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = minilm_tokenizer()
    torch.manual_seed(1)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=num_labels,
                        pad_token_id=tok.pad_token_id, initializer_range=0.5)
    BertForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def scalar_dir(tmp_path_factory):
    return save_scalar_rm(tmp_path_factory.mktemp("scalar"))


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    return save_release_rm(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def wildreward_dir(tmp_path_factory):
    return build_tiny_rm(tmp_path_factory)


@functools.lru_cache(maxsize=4)
def saved_model(path: str):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True).eval()


def direct(path: str, input_ids: list[int]) -> torch.Tensor:
    """The logits of one unpadded forward of the saved model."""
    with torch.inference_mode():
        return saved_model(path)(input_ids=torch.tensor([input_ids])).logits[0].float()


# ---------------------------------------------------------------- each kind scores as the model itself would

@pytest.mark.parametrize("pad", [True, False], ids=["pad-id", "no-pad-id"])
def test_hf_scalar_is_the_logit_on_the_chat_template(tmp_path, pad):
    path = save_scalar_rm(tmp_path, pad=pad)
    rm = load_scorer(resolve_kind(ScorerSpec(name="s", path=path)))
    assert isinstance(rm, ScalarRewardModel)
    assert rm.texts(EXAMPLES[:1]) == [SCALAR_TEXT]
    scores = rm.score(EXAMPLES)  # different lengths: padded together when the config has a pad id
    tok = minilm_tokenizer()
    for text, score in zip([SCALAR_TEXT] + rm.texts(EXAMPLES[1:]), scores):
        ids = tok(text, add_special_tokens=False)["input_ids"]  # the template carries its own markers
        assert score == pytest.approx(direct(path, ids)[0].item(), abs=1e-5)
    assert len(set(scores)) == 3


def test_hf_scalar_truncates_explicitly_at_max_length(scalar_dir):
    rm = ScalarRewardModel(scalar_dir, max_length=8)
    ids = minilm_tokenizer()(SCALAR_TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) > 8
    assert rm.score(EXAMPLES[:1])[0] == pytest.approx(direct(scalar_dir, ids[:8])[0].item(), abs=1e-5)
    assert ScalarRewardModel(scalar_dir).max_length == 256  # the model's max_position_embeddings
    with pytest.raises(ValueError, match="exceeds the model's limit of 256"):
        ScalarRewardModel(scalar_dir, max_length=1000)


def test_wildreward_release_is_the_expected_level_on_the_original_template(release_dir):
    rm = load_scorer(resolve_kind(ScorerSpec(name="r", path=release_dir)))
    assert isinstance(rm, ReleaseRewardModel) and rm.max_length == 512  # the tiny BERT's limit, under 4096
    assert rm.texts(EXAMPLES[:1]) == [RELEASE_TEXT]
    scores = rm.score(EXAMPLES)
    tok = minilm_tokenizer()
    for ex, score in zip(EXAMPLES, scores):
        text = RELEASE_TEXT if ex is EXAMPLES[0] else build_rm_text(ex["history"], ex["query"], ex["response"])
        logits = direct(release_dir, tok(text)["input_ids"])  # special tokens added, as the original server does
        assert logits.shape == (3,)
        assert score == pytest.approx(1 + torch.sigmoid(logits).sum().item(), abs=1e-5)
        assert 1 <= score <= 4
    assert len(set(scores)) == 3


def test_the_actor_scores_any_kind_and_isolates_a_bad_row(scalar_dir, release_dir, wildreward_dir):
    rows = EXAMPLES[:2] + [{"history": [], "query": "q", "response": None}]
    batch = pa.table({"idx": [0, 1, 2], "example": [json.dumps(r) for r in rows]})
    for path in (scalar_dir, release_dir, wildreward_dir):
        spec = resolve_kind(ScorerSpec(name="x", path=path))
        out = RewardScorer(spec.model_dump(), num_gpus=0, dtype="fp32")(batch).to_pylist()
        expected = load_scorer(spec).score(EXAMPLES[:2])
        assert [r["score"] for r in out[:2]] == pytest.approx(expected, abs=1e-5), spec.kind
        assert out[2]["score"] is None and out[2]["error"], spec.kind
        assert out[0]["error"] is None and out[1]["error"] is None


# ---------------------------------------------------------------- kind detection and bad checkpoints

def test_auto_detection_picks_each_kind(scalar_dir, release_dir, wildreward_dir):
    assert detect_kind(scalar_dir) == "hf_scalar"
    assert detect_kind(release_dir) == "wildreward_release"
    assert detect_kind(wildreward_dir) == "wildreward"  # a 3-logit HF checkpoint too: wildreward.json wins
    assert resolve_kind(ScorerSpec(name="e", url="http://h:1")).kind == "endpoint"
    # our own model can also be read the way the original reads a release
    assert resolve_kind(ScorerSpec(name="w", kind="wildreward_release", path=wildreward_dir)).kind == \
        "wildreward_release"


def copy_with_config(src: str, dst, **changes) -> str:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **changes}))
    return str(dst)


def test_bad_checkpoints_give_clear_errors(tmp_path, release_dir, scalar_dir, wildreward_dir):
    def error(path, kind="auto"):
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            resolve_kind(ScorerSpec(name="x", kind=kind, path=str(path)))
        return str(info.value)

    assert "no such directory" in error(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert str(tmp_path / "empty") in error(tmp_path / "empty") and "notes.txt" in error(tmp_path / "empty")
    two = copy_with_config(release_dir, tmp_path / "two", id2label={"0": "NO", "1": "YES"})
    assert "2 labels" in error(two) and "hf_scalar) has 1" in error(two)
    lm = copy_with_config(release_dir, tmp_path / "lm", architectures=["LlamaForCausalLM"])
    assert "not a sequence classifier" in error(lm)
    pickled = copy_with_config(release_dir, tmp_path / "pickled")
    (tmp_path / "pickled" / "model.safetensors").rename(tmp_path / "pickled" / "pytorch_model.bin")
    assert "no safetensors weights" in error(pickled)
    assert "kind hf_scalar needs 1" in error(release_dir, "hf_scalar")
    assert "not a wildreward reward model" in error(release_dir, "wildreward")
    plain = tmp_path / "plain"
    shutil.copytree(scalar_dir, plain)
    (plain / "chat_template.jinja").unlink()
    assert "no chat template" in error(plain)
    with pytest.raises(ValueError, match="no chat template"):  # also when loaded directly
        ScalarRewardModel(str(plain))
    fb = tmp_path / "feedback"
    shutil.copytree(wildreward_dir, fb)
    meta = json.loads((fb / "wildreward.json").read_text())
    (fb / "wildreward.json").write_text(json.dumps({**meta, "input": "feedback"}))
    assert "feedback classifier" in error(fb)


def test_scorer_config_checks():
    with pytest.raises(ValueError, match="exactly one of path and url"):
        ScorerSpec(name="x", path="/a", url="http://b")
    with pytest.raises(ValueError, match="needs a url"):
        ScorerSpec(name="x", kind="endpoint", path="/a")
    with pytest.raises(ValueError, match="protocol is for endpoints"):
        ScorerSpec(name="x", path="/a", protocol="score")
    with pytest.raises(ConfigError, match="reserved"):
        load_config(EvalConfig, None, ["scorers=[{name: length, path: /a}]"])
    with pytest.raises(ConfigError, match="repeat"):
        load_config(EvalConfig, None, ["scorers=[{name: a, path: /a}, {name: a, url: 'http://b'}]"])
    cfg = load_config(EvalConfig, None, ["second_model_dir=/m2", "scorers=[{name: sky, path: /s}]"])
    assert [(s.name, s.kind, s.path) for s in cfg.model_scorers()] == [
        ("rm", "wildreward", cfg.model_dir), ("second_rm", "wildreward", "/m2"), ("sky", "auto", "/s")]
    served = EvalConfig(endpoint="http://h:1").model_scorers()[0]
    assert (served.name, served.kind, served.url) == ("rm", "endpoint", "http://h:1")


# ---------------------------------------------------------------- an OpenRLHF-style /get_reward service

class GetRewardServer:
    """OpenRLHF's protocol only (no /v1/info): reward = len(text) / 100; a request holding a text with "BAD"
    gets a 422. Records every text received and every GET."""

    def __init__(self):
        self.texts, self.gets = [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                outer.gets.append(self.path)
                self.reply(404, {"detail": "Not Found"})

            def do_POST(self):
                texts = json.loads(self.rfile.read(int(self.headers["content-length"])))["query"]
                if self.path != "/get_reward":
                    return self.reply(404, {"detail": "Not Found"})
                if any("BAD" in t for t in texts):
                    return self.reply(422, {"detail": "bad text"})
                outer.texts.extend(texts)
                self.reply(200, {"rewards": [len(t) / 100 for t in texts]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def get_reward_server():
    server = GetRewardServer()
    yield server
    server.close()


def test_get_reward_endpoint_gets_the_template_texts(get_reward_server):
    srv = get_reward_server
    bad = {"history": [], "query": "q", "response": "a BAD reply"}
    malformed = {"history": [], "query": "q", "response": None}
    examples = EXAMPLES + [EXAMPLES[0], bad, malformed]
    scored = score_examples(examples, spec=ScorerSpec(name="ep", url=srv.url), batch_size=2)
    assert srv.gets == ["/v1/info"]  # auto: /v1/info is not there, so /get_reward
    texts = [build_rm_text(ex["history"], ex["query"], ex["response"]) for ex in EXAMPLES]
    assert texts[0] == RELEASE_TEXT
    # after the probe text, the distinct examples' texts (requests go out concurrently, and the texts of a
    # failed call are sent again one by one: no order or count)
    assert srv.texts[0] == PROBE_TEXT and set(srv.texts[1:]) == set(texts)
    assert scored.scores[:4] == [len(t) / 100 for t in texts + texts[:1]]
    assert scored.scores[4] is None and "422" in scored.errors[4]
    assert scored.scores[5] is None and "TypeError" in scored.errors[5]
    assert scored.errors[:4] == [None] * 4


def test_endpoint_protocol_from_the_url_or_the_config(get_reward_server):
    srv = get_reward_server
    spec = resolve_kind(ScorerSpec(name="ep", url=srv.url + "/get_reward"))
    assert (spec.url, spec.protocol) == (srv.url, "get_reward")
    assert resolve_scorers([ScorerSpec(name="ep", url=srv.url)])[0].protocol == "get_reward"
    srv.gets.clear()
    scored = score_examples(EXAMPLES[:1], spec=ScorerSpec(name="ep", url=srv.url + "/get_reward"))
    assert scored.scores == [len(RELEASE_TEXT) / 100] and srv.gets == []  # no probing of /v1/info
    with pytest.raises(RewardServiceError, match="not reachable"):
        score_examples(EXAMPLES[:1], spec=ScorerSpec(name="ep", url=srv.url, protocol="score"))
    with pytest.raises(ValueError, match="protocol is score"):
        resolve_kind(ScorerSpec(name="ep", url=srv.url + "/get_reward", protocol="score"))


# ---------------------------------------------------------------- every kind in one report, on Ray

@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_eval_reports_every_kind_as_a_row(ray_local, tmp_path, scalar_dir, release_dir, wildreward_dir,
                                              get_reward_server):
    data = SHARED / "data"
    if not data.exists():
        pytest.fail(f"real benchmarks not found under {data} (set WILDREWARD_SHARED)")
    scorers = [{"name": "sky", "path": scalar_dir}, {"name": "release", "path": release_dir},
               {"name": "served", "url": get_reward_server.url}]
    cfg = EvalConfig(model_dir=wildreward_dir, scorers=scorers, benchmarks=["rm_bench", "llmbar"],
                     data_dir=str(data), max_pairs=4, batch_size=16, num_actors=1, num_cpus=1,
                     output_dir=str(tmp_path / "out"))
    report = run_eval(cfg)
    names = ["rm", "sky", "release", "served", "length", "random"]
    assert list(report["scorers"]) == names
    assert all(report["scorers"][n]["failed_examples"] == 0 for n in names)
    assert "hf_scalar" in report["scorers"]["sky"]["source"]
    assert "protocol get_reward" in report["scorers"]["served"]["source"]
    for name in names:
        assert report["benchmarks"]["llmbar"]["scorers"][name]["scored"] == 4
    pairs = pq.read_table(tmp_path / "out" / "pair_scores.parquet").to_pylist()
    llmbar = [p for p in pairs if p["benchmark"] == "llmbar"]
    from wildreward.eval.benchmarks import default_path, load_benchmark
    from wildreward.eval.pipeline import seeded_subset

    first = seeded_subset(load_benchmark("llmbar", default_path("llmbar", str(data))).records, 4, 0, "llmbar")[0]
    ex = {"history": first["history"], "query": first["query"], "response": first["chosen"]}
    assert llmbar[0]["sky_chosen"] == pytest.approx(ScalarRewardModel(scalar_dir).score([ex])[0], abs=1e-4)
    assert llmbar[0]["release_chosen"] == pytest.approx(ReleaseRewardModel(release_dir).score([ex])[0], abs=1e-4)
    text = build_rm_text(ex["history"], ex["query"], ex["response"])
    assert llmbar[0]["served_chosen"] == pytest.approx(len(text) / 100) and text in get_reward_server.texts
    cal = report["calibration"]["scorers"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    for name in ("rm", "sky", "release", "served"):  # every model's threshold curve, no baseline's
        assert f"{name} acc" in markdown and "thresholds" in cal[name]
    assert "length acc" not in markdown and np.isfinite(cal["sky"]["ece"])
