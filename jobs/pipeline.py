"""Ray job: the whole pipeline, extract -> train -> eval -> serve -> (optional) online DPO (``wildreward pipeline``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --submission-id wildreward-1 -- \
        python jobs/pipeline.py --config jobs/configs/pipeline_default.yaml output_dir=/abs/outputs/default \
        eval.data_dir=/abs/shared/data 'dpo.prompts.chatlogs=[/abs/shared/data/chatlogs/lmsys_chat_sample.jsonl]' \
        'stages=[extract,train,eval,serve,dpo]'

Paths outside the repository must be absolute: the job runs in an uploaded copy of it (jobs/run_local.sh does this).

Overrides address a stage's section (``extract.annotator.mode=freeform``, ``train.model.head=coral``).
Re-submitting with the same ``output_dir`` skips finished stages and resumes the unfinished one.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted copy of the package, not an install

from wildreward.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
