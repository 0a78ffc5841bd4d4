"""Ray job: gold dev turns (+ LLM-labelled turns) -> feedback classifier (``wildreward labeller``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/train_labeller.py --config jobs/configs/labeller_default.yaml \
        output_dir=/abs/outputs/labeller chatlogs_dir=/abs/shared/data/chatlogs

Then label with it: ``python jobs/extract.py ... annotator.backend=classifier
annotator.classifier.model_dir=/abs/outputs/labeller/model``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted copy of the package, not an install

from wildreward.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["labeller", *sys.argv[1:]]))
