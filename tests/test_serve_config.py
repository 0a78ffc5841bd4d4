"""The Serve config files under cluster/ stay in step with the serve configs that produce them."""
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from wildreward.cli import main
from wildreward.serve.app import app_builder
from wildreward.serve.config import ServeConfig

REPO = Path(__file__).resolve().parents[1]


def test_written_serve_config_rebuilds_the_application(tmp_path):
    out = tmp_path / "serve.yaml"
    assert main(["serve", "--config", str(REPO / "jobs/configs/serve_gpu.yaml"), "--write-serve-config", str(out),
                 "max_batch_size=48"]) == 0
    spec = yaml.safe_load(out.read_text())
    (app,) = spec["applications"]
    assert app["import_path"] == "wildreward.serve.app:app_builder"
    cfg = ServeConfig.model_validate(app["args"])
    assert cfg.max_batch_size == 48 and cfg.num_gpus == 1
    (deployment,) = app["deployments"]
    # serve build recorded the options build_app derives from the config
    assert deployment["max_ongoing_requests"] == 96 >= cfg.max_batch_size
    assert deployment["max_queued_requests"] == cfg.max_queued_requests
    assert deployment["backpressure_config"] == {"status_code": 503, "retry_after_s": cfg.retry_after_s}
    assert deployment["autoscaling_config"]["max_replicas"] == cfg.max_replicas
    assert deployment["ray_actor_options"] == {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}
    assert spec["http_options"] == {"host": cfg.host, "port": cfg.port}


def test_committed_cluster_files_match_their_source(tmp_path):
    out = tmp_path / "rm_gpu.yaml"
    main(["serve", "--config", str(REPO / "jobs/configs/serve_gpu.yaml"), "--write-serve-config", str(out)])
    committed = yaml.safe_load((REPO / "cluster/serve/rm_gpu.yaml").read_text())
    assert yaml.safe_load(out.read_text()) == committed, "regenerate cluster/serve/rm_gpu.yaml (see its header)"
    service = yaml.safe_load((REPO / "cluster/kuberay/rayservice-rm.yaml").read_text())
    assert service["kind"] == "RayService"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == {"applications": committed["applications"]}
    gpu_group = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert gpu_group["maxReplicas"] == committed["applications"][0]["args"]["max_replicas"]


def test_app_builder_rejects_bad_args():
    with pytest.raises(ValidationError, match="max_batch_size"):
        app_builder({"model_dir": "m", "max_batch_size": 0})
    with pytest.raises(ValidationError, match="Extra inputs"):
        app_builder({"model_dir": "m", "batch": 8})
