"""Ray job: users vs performance (``wildreward users-scaling``): users split into a training pool and a held-out pool
first, then one RM per (distinct users, seed) point at a fixed number of training examples, trained as parallel
Ray tasks and scored by the eval stage on the held-out users' rows and the benchmarks, then one curve per metric
with error bars over seeds.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/users_scaling.py --config jobs/configs/users_scaling_default.yaml \
        train_data=[/abs/outputs/extract/train] test_data=[/abs/outputs/extract/test] output_dir=/abs/outputs/users

Each point trains with ``train_config`` plus ``train_overrides`` and is scored with ``eval_config`` plus
``eval_overrides``; ``max_parallel`` points run at once.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted copy of the package, not an install

from wildreward.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["users-scaling", *sys.argv[1:]]))
