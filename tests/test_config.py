import json

import pytest
import yaml

from wildreward.config import ConfigError, load_config, parse_overrides, save_config
from wildreward.extract.config import ExtractConfig
from wildreward.template import NO_HISTORY, build_rm_text, format_history

REPO_CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "jobs" / "configs"


def test_overrides_parse_yaml_values_into_nested_keys():
    assert parse_overrides(["a.b=1", "a.c=[x, y]", "d=true", "e=null"]) == {
        "a": {"b": 1, "c": ["x", "y"]}, "d": True, "e": None}
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_overrides(["novalue"])


def test_values_parse_as_yaml_1_2(tmp_path):
    # YAML 1.1 read the language code `no` as False and 5e-1 as a string, which untyped dicts passed on as is
    assert parse_overrides(["filters.languages=[en,no,on]", "annotator.engine_kwargs={gpu_memory_utilization: 5e-1}",
                            "a=true", "b=False", "c=1e5"]) == {
        "filters": {"languages": ["en", "no", "on"]}, "annotator": {"engine_kwargs": {"gpu_memory_utilization": 0.5}},
        "a": True, "b": False, "c": 100000.0}
    path = tmp_path / "c.yaml"
    path.write_text("filters:\n  languages: [en, no]\n")
    assert load_config(ExtractConfig, path).filters.languages == ["en", "no"]


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("annotator: {backend: http, batch_size: 4}\nmining: {threshold: 0.5}\n")
    cfg = load_config(ExtractConfig, path, ["annotator.batch_size=32", "read.paths=[a.jsonl]"])
    assert (cfg.annotator.backend, cfg.annotator.batch_size, cfg.mining.threshold) == ("http", 32, 0.5)
    assert cfg.read.paths == ["a.jsonl"]
    assert cfg.refusal.variant == "paper"  # untouched default


def test_bad_keys_and_values_are_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(ExtractConfig, None, ["annotator.bakend=vllm", "mining.threshold=high", "annotator.mode=fast"])
    msg = str(err.value)
    assert "annotator.bakend: unknown key" in msg
    assert "mining.threshold" in msg and "annotator.mode" in msg
    with pytest.raises(ConfigError, match="min_actors"):
        load_config(ExtractConfig, None, ["annotator.min_actors=4", "annotator.max_actors=2"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(ExtractConfig, bad)


def test_config_is_frozen():
    cfg = load_config(ExtractConfig)
    with pytest.raises(Exception):
        cfg.output_dir = "x"


@pytest.mark.parametrize("path", sorted(REPO_CONFIGS.glob("extract*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    load_config(ExtractConfig, path)


def test_save_config_roundtrips_with_versions(tmp_path):
    cfg = load_config(ExtractConfig, None, ["mining.threshold=0.55"])
    save_config(cfg, tmp_path, "extract")
    again = load_config(ExtractConfig, tmp_path / "config.yaml")
    assert again == cfg
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["stage"] == "extract" and "ray" in info["versions"] and "torch" in info["versions"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["mining"]["threshold"] == 0.55


def test_format_history_lines():
    hist = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert format_history(hist) == "user: hi\nassistant: hello\n"
    assert format_history([]) == NO_HISTORY
    assert "user: hi\nassistant: hello\n\n\n## User Query" in build_rm_text(hist, "q", "r")
