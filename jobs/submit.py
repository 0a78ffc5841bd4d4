"""Submits a job script like `ray job submit --working-dir . --no-wait`, and also hands the job the secrets its
config names (the HTTP annotator's `api_key_env`), taken from this shell's environment:

    python jobs/submit.py --address http://127.0.0.1:8265 --submission-id extract-1 -- \\
        python jobs/extract.py --config jobs/configs/extract_http.yaml read.paths=[/abs/logs]

A job runs where `ray job submit` is not, so a key exported here never reaches its annotator actors otherwise.
The values go in the submission's runtime_env env_vars only: never in the entrypoint, the printed lines or the
saved config.yaml (which holds the variable's name). `--env NAME` forwards more variables.
"""
import argparse
import shlex
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wildreward import ray_compat as rc  # noqa: E402
from wildreward.config import load_config  # noqa: E402

# job script -> its config class, for the ones whose configs name secret env vars
CONFIGS = {"extract.py": ("wildreward.extract.config", "ExtractConfig"),
           "pipeline.py": ("wildreward.pipeline", "PipelineConfig")}


def secret_env_names(entrypoint: list[str]) -> list[str]:
    """The API-key env var names of the HTTP annotators that ``python jobs/X.py --config F k=v ...`` will use."""
    script = Path(entrypoint[1]).name if len(entrypoint) > 1 else ""
    if script not in CONFIGS:
        return []
    module, name = CONFIGS[script]
    cls = getattr(__import__(module, fromlist=[name]), name)
    args = entrypoint[2:]
    path = args[args.index("--config") + 1] if "--config" in args else None
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    return sorted({a["http"]["api_key_env"] for a in annotators(load_config(cls, path, overrides).model_dump())
                   if uses_http(a) and a["http"]["api_key_env"]})


def annotators(node):
    """Every annotator section (a mapping with ``backend`` and ``http``) in a dumped config."""
    if isinstance(node, dict):
        if "backend" in node and "http" in node:
            yield node
        for value in node.values():
            yield from annotators(value)


def uses_http(annotator: dict) -> bool:
    cascade = annotator.get("classifier") or {}
    return annotator["backend"] == "http" or (annotator["backend"] == "classifier"
                                              and cascade.get("llm_backend") == "http"
                                              and cascade.get("llm_budget", 0) > 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="http://127.0.0.1:8265")
    parser.add_argument("--submission-id")
    parser.add_argument("--working-dir", default=".")
    parser.add_argument("--runtime-env", help="a runtime_env YAML (cluster/runtime_env.yaml) to start from")
    parser.add_argument("--env", action="append", default=[], help="another env var to forward, by name")
    args, entrypoint = parser.parse_args(argv[:split]), argv[split + 1:]
    if not entrypoint:
        parser.error("give the job's command after --")
    base = yaml.safe_load(Path(args.runtime_env).read_text()) if args.runtime_env else {}
    base.setdefault("working_dir", args.working_dir)
    names = sorted(set(args.env) | set(secret_env_names(entrypoint)))
    runtime_env = rc.job_runtime_env(base, names)
    job = rc.submit_job(args.address, shlex.join(entrypoint), runtime_env, args.submission_id)
    sent = [n for n in names if n in runtime_env["env_vars"]]
    print(f"submitted job {job}" + (f"; forwarded env vars (values not shown): {', '.join(sent)}" if sent else ""))
    for name in sorted(set(names) - set(sent)):
        print(f"warning: {name} is named by the config but not set here; the job will not have it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
