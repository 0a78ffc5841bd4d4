"""Ray job: WildFB-style data set -> ordinal reward model (``wildreward train``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/train_rm.py --config jobs/configs/train_default.yaml \
        data.train=[/abs/outputs/extract/train] data.test=[/abs/outputs/extract/test] output_dir=/abs/outputs/train

Give absolute paths on storage every node sees. Re-submitting with the same ``checkpoint.name`` and storage
resumes from the last checkpoint; a worker that dies mid-run is restarted from it (``checkpoint.max_failures``).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted copy of the package, not an install

from wildreward.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
