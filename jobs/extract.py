"""Ray job: chat logs -> WildFB-style reward-model data set (``wildreward extract``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/extract.py --config jobs/configs/extract_default.yaml output_dir=/abs/path/outputs/extract

Any dotted override may follow the config (``annotator.backend=vllm annotator.max_actors=8``). Give an absolute
``output_dir`` (or a path on shared storage): the job runs in a copy of the working dir. Re-submitting with the
same output_dir resumes: finished stages are reused and annotation continues where it stopped.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted copy of the package, not an install

from wildreward.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
