"""``wildreward <stage> --config FILE.yaml [dotted.key=value ...]``: one subcommand per pipeline stage.

Runs the stage in-process on Ray: inside a ``ray job submit`` it joins that cluster, elsewhere it starts a
private local Ray. For cluster runs prefer the entry points in ``jobs/``.
"""
from __future__ import annotations

import argparse
import os
import sys

from wildreward.config import ConfigError, load_config


def run_extract_command(args: argparse.Namespace) -> int:
    from wildreward.extract.config import ExtractConfig
    from wildreward.extract.pipeline import run_extract

    cfg = load_config(ExtractConfig, args.config, args.overrides)
    stats = run_extract(cfg)
    print(f"train rows: {stats['split']['train']['rows']}, test rows: {stats['split']['test']['rows']}")
    return 0


def run_train_command(args: argparse.Namespace) -> int:
    from wildreward.train.config import TrainConfig
    from wildreward.train.pipeline import run_train

    cfg = load_config(TrainConfig, args.config, args.overrides)
    summary = run_train(cfg)
    final = summary.get("eval") or {}
    print(f"steps: {summary['steps']}, final loss: {summary['final_loss']:.4f}"
          + (f", held-out accuracy {final['accuracy']:.3f}, MAE {final['mae']:.3f}" if final else ""))
    print(f"model: {summary['model_dir']}")
    return 0


def run_labeller_command(args: argparse.Namespace) -> int:
    from wildreward.extract.classifier import LabellerConfig, run_labeller

    cfg = load_config(LabellerConfig, args.config, args.overrides)
    summary = run_labeller(cfg)
    print(f"{summary['kind']} feedback classifier trained on {summary['training_rows']} rows: {summary['model_dir']}")
    return 0


def run_users_scaling_command(args: argparse.Namespace) -> int:
    from wildreward.eval.users import UsersScalingConfig, run_users_scaling

    cfg = load_config(UsersScalingConfig, args.config, args.overrides)
    report = run_users_scaling(cfg)
    for metric, curve in report["curves"].items():
        print(f"{metric}: " + ", ".join(f"{c['users']} users {c['mean']:.3f}±{c['std']:.3f}" for c in curve))
    print(f"report: {cfg.output_dir}/report.json, plot: {cfg.output_dir}/users_scaling.png")
    return 0


def run_dpo_command(args: argparse.Namespace) -> int:
    from wildreward.dpo.config import DPOConfig
    from wildreward.dpo.pipeline import run_dpo

    cfg = load_config(DPOConfig, args.config, args.overrides)
    report = run_dpo(cfg)
    for when in ("before", "after"):
        r = report[when]
        print(f"{when}: held-out reward {r.get('reward_mean')}, tokens {r.get('response_tokens_mean')}, "
              f"instruction checks {r.get('instruction_checks', {}).get('overall')}")
    print(f"policy: {report['policy_dir']}")
    return 0


def run_pipeline_command(args: argparse.Namespace) -> int:
    from wildreward.pipeline import PipelineConfig, run_pipeline

    cfg = load_config(PipelineConfig, args.config, args.overrides)
    summary = run_pipeline(cfg)
    for stage, info in summary["stages"].items():
        print(f"{stage}: " + ("skipped (done before)" if info["skipped"] else f"{info['seconds']} s"))
    return 0


def run_ablation_command(args: argparse.Namespace) -> int:
    from wildreward.eval.ablation import AblationConfig, ablation_table, run_ablation

    cfg = load_config(AblationConfig, args.config, args.overrides)
    print(ablation_table(run_ablation(cfg)))
    return 0


def run_serve_command(args: argparse.Namespace) -> int:
    import time

    from wildreward import ray_compat as rc
    from wildreward.serve.app import build_app
    from wildreward.serve.config import ServeConfig

    cfg = load_config(ServeConfig, args.config, args.overrides)
    if args.write_serve_config:
        path = write_serve_config(cfg, args.write_serve_config)
        print(f"wrote {path}: deploy with `serve deploy {path}` or paste it into a RayService's serveConfigV2")
        return 0
    rc.init_ray()
    rc.serve_run(build_app(cfg), name=cfg.name, host=cfg.host, port=cfg.port, route_prefix=cfg.route_prefix)
    print(f"serving {cfg.model_dir} at http://{cfg.host}:{cfg.port}{cfg.route_prefix.rstrip('/')}/get_reward "
          "and /v1/score", flush=True)
    if os.environ.get("RAY_ADDRESS"):  # a Ray job or a cluster: the Serve application outlives this driver
        print(f"application {cfg.name!r} deployed; stop it with `serve shutdown` or `serve delete {cfg.name}`")
        return 0
    print("Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        rc.serve_shutdown()
    return 0


def run_eval_command(args: argparse.Namespace) -> int:
    from wildreward.eval.config import EvalConfig
    from wildreward.eval.pipeline import run_eval
    from wildreward.eval.report import summary_table

    cfg = load_config(EvalConfig, args.config, args.overrides)
    summary = summary_table(run_eval(cfg))
    for scorer, row in summary.items():  # value and 95% interval per column; "n/e" = not evaluated
        print(f"{scorer}: " + ", ".join(f"{k} n/e" if c["value"] is None else f"{k} {c['value']:.3f}"
                                        + (f" [{c['lo']:.3f}, {c['hi']:.3f}]" if c["lo"] is not None else "")
                                        for k, c in row.items()))
    print(f"report: {os.path.join(cfg.output_dir, 'report.md')}")
    return 0


def write_serve_config(cfg, path: str) -> str:
    """A Serve config file for ``serve deploy`` / KubeRay: ``serve build`` writes the deployment options of the
    application this config builds, then the import path becomes the application builder with the config as
    ``args``, so the file alone rebuilds the same application on any cluster."""
    import json
    import subprocess
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        built = os.path.join(tmp, "serve.yaml")
        env = {**os.environ, "WILDREWARD_SERVE_CONFIG": json.dumps(cfg.model_dump(mode="json"))}
        # The Serve CLI through this interpreter: a `serve` on PATH may be missing or another environment's.
        subprocess.run([sys.executable, "-c", "from ray.serve.scripts import cli; cli()", "build",
                        "wildreward.serve.app:app", "-o", built], env=env, check=True, stdout=subprocess.DEVNULL)
        with open(built, encoding="utf-8") as f:
            spec = yaml.safe_load(f)
    spec["http_options"] = {"host": cfg.host, "port": cfg.port}
    (app,) = spec["applications"]
    app.update(name=cfg.name, route_prefix=cfg.route_prefix, import_path="wildreward.serve.app:app_builder",
               args=cfg.model_dump(mode="json"))
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# Written by `wildreward serve --write-serve-config` (serve build + builder args); deploy with "
                f"`serve deploy {path}`.\n")
        yaml.safe_dump(spec, f, sort_keys=False)
    return path


COMMANDS = {
    "pipeline": (run_pipeline_command, "all stages in one run: extract -> train -> eval -> serve -> dpo"),
    "labeller": (run_labeller_command, "gold / LLM-labelled turns -> feedback classifier (the fast labeller)"),
    "extract": (run_extract_command, "chat logs -> WildFB-style reward-model data set"),
    "train": (run_train_command, "data set -> ordinal reward model (Ray Train + DeepSpeed)"),
    "users-scaling": (run_users_scaling_command, "RMs trained on data from N distinct users -> performance curve"),
    "dpo": (run_dpo_command, "policy + served reward model -> online DPO (Ray Train + Serve + vLLM)"),
    "ablation": (run_ablation_command, "data-strategy ablation: mining / refusal validation on and off"),
    "serve": (run_serve_command, "reward model -> HTTP + DeploymentHandle service (Ray Serve)"),
    "eval": (run_eval_command, "reward model -> benchmark accuracy, calibration, consistency report (Ray Data)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wildreward", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", help="stage YAML (see jobs/configs/); defaults apply without one")
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help="dotted overrides, e.g. annotator.mode=freeform")
        if name == "serve":
            p.add_argument("--write-serve-config", metavar="PATH",
                           help="write a Serve config file (serve deploy / KubeRay RayService) instead of serving")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][0](args)
    except ConfigError as err:
        print(f"wildreward {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
