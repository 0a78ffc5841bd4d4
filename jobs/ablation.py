"""Ray job: the data-strategy ablation (``wildreward ablation``): extract with and without implicit-feedback mining
and refusal validation (annotation shared), train and evaluate one RM per variant, tabulate like the paper's
Table 2.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/ablation.py --config jobs/configs/ablation_default.yaml output_dir=/abs/outputs/ablation \
        eval.data_dir=/abs/shared/data
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted copy of the package, not an install

from wildreward.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["ablation", *sys.argv[1:]]))
