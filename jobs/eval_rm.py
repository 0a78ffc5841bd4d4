"""Ray job: evaluate a trained reward model on the preference benchmarks, with calibration and cross-sample
consistency (``wildreward eval``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/eval_rm.py --config jobs/configs/eval_default.yaml model_dir=/abs/outputs/default/train/model \
        data_dir=/abs/shared/data consistency_data=/abs/outputs/default/extract/test output_dir=/abs/outputs/eval

Give absolute paths on storage every node sees (the job runs from an uploaded copy of the repo, so the default
data_dir, ../shared/data next to the repo, does not exist there). ``endpoint=http://127.0.0.1:8000`` scores a
model served by ``wildreward serve`` instead of loading model_dir.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted copy of the package, not an install

from wildreward.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
