"""jobs/submit.py hands a submitted job the API key its config names, from the submitting shell: the name is
forwarded in the runtime_env env_vars, and the value is in neither the entrypoint, the printed lines nor the
saved config."""
import importlib.util

import pytest

from tests.conftest import REPO
from wildreward import ray_compat as rc
from wildreward.config import load_config, save_config
from wildreward.extract.config import ExtractConfig

SECRET = "sk-test-0123456789abcdef"
HTTP = ["--config", "jobs/configs/extract_http.yaml", "annotator.http.api_key_env=WR_TEST_KEY"]


@pytest.fixture
def submit(monkeypatch):
    spec = importlib.util.spec_from_file_location("jobs_submit", REPO / "jobs" / "submit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sent = {}
    monkeypatch.setattr(rc, "submit_job", lambda address, entrypoint, runtime_env, submission_id: sent.update(
        address=address, entrypoint=entrypoint, runtime_env=runtime_env) or submission_id)
    monkeypatch.setenv("WR_TEST_KEY", SECRET)
    return module, sent


def test_the_configs_key_reaches_the_job_env_and_nowhere_else(submit, capsys):
    module, sent = submit
    assert module.main(["--submission-id", "x1", "--", "python", "jobs/extract.py", *HTTP]) == 0
    assert sent["runtime_env"]["env_vars"]["WR_TEST_KEY"] == SECRET
    assert sent["runtime_env"]["working_dir"] == "."
    assert SECRET not in sent["entrypoint"] and "jobs/extract.py" in sent["entrypoint"]
    out = capsys.readouterr()
    assert "WR_TEST_KEY" in out.out and SECRET not in out.out + out.err


def test_pipeline_config_and_runtime_env_file_keep_their_env_vars(submit, tmp_path):
    module, sent = submit
    module.main(["--runtime-env", "cluster/runtime_env.yaml", "--", "python", "jobs/pipeline.py", "--config",
                 "jobs/configs/pipeline_default.yaml", "stages=[extract,train]", "extract.annotator.backend=http",
                 "extract.annotator.http.api_key_env=WR_TEST_KEY"])
    env = sent["runtime_env"]["env_vars"]
    assert env["WR_TEST_KEY"] == SECRET and env["HF_HUB_OFFLINE"] == "1"


def test_nothing_is_forwarded_when_no_http_annotator_runs(submit, monkeypatch):
    module, sent = submit
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    module.main(["--", "python", "jobs/extract.py", "--config", "jobs/configs/extract_default.yaml"])
    assert SECRET not in str(sent["runtime_env"])
    module.main(["--env", "OPENAI_API_KEY", "--", "python", "jobs/train_rm.py"])  # asked for by name
    assert sent["runtime_env"]["env_vars"] == {"OPENAI_API_KEY": SECRET}


def test_an_unset_key_is_named_in_a_warning(submit, monkeypatch, capsys):
    module, sent = submit
    monkeypatch.delenv("WR_TEST_KEY")
    module.main(["--", "python", "jobs/extract.py", *HTTP])
    assert sent["runtime_env"]["env_vars"] == {} and "WR_TEST_KEY is named" in capsys.readouterr().err


def test_saved_config_holds_the_name_not_the_value(tmp_path, monkeypatch):
    monkeypatch.setenv("WR_TEST_KEY", SECRET)
    cfg = load_config(ExtractConfig, REPO / "jobs/configs/extract_http.yaml", HTTP[2:])
    save_config(cfg, tmp_path, "extract")
    saved = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "WR_TEST_KEY" in saved and SECRET not in saved
