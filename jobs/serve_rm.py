"""Ray job: deploy a trained reward model on Ray Serve (``wildreward serve``); the application stays up after the
job ends.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/serve_rm.py --config jobs/configs/serve_default.yaml model_dir=/abs/outputs/default/train/model

Then ``curl -X POST http://127.0.0.1:8000/get_reward -d '{"query": ["..."]}'``; stop with ``serve shutdown``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted copy of the package, not an install

from wildreward.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
