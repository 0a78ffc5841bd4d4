"""Ray job: online DPO of a policy scored by the served reward model (``wildreward dpo``).

The RM must already be deployed on the cluster (jobs/serve_rm.py); the job calls it through a DeploymentHandle
(``rm.app_name``) or over HTTP (``rm.endpoint``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/dpo.py --config jobs/configs/dpo_default.yaml output_dir=/abs/outputs/dpo \
        'prompts.chatlogs=[/abs/shared/data/chatlogs/lmsys_chat_sample.jsonl]'

Paths outside the repository must be absolute: the job runs in an uploaded copy of it.

Re-submitting with the same ``checkpoint.name`` and storage resumes from the last checkpoint (the rollout
engines get the checkpoint's weights before the first generation).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted copy of the package, not an install

from wildreward.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["dpo", *sys.argv[1:]]))
