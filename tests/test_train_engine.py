"""Training checks that need no Ray: the template-length refusal before training starts and DeepSpeed's
CUDA arch list (moved out of test_train_ray.py, which trains on Ray)."""
import pytest

from wildreward.config import load_config
from wildreward.train.config import TrainConfig
from wildreward.train.pipeline import run_train


def test_max_length_below_the_template_is_refused_before_training(tiny_bert, tmp_path):
    cfg = load_config(TrainConfig, None, [f"model.backbone={tiny_bert}", f"data.train=[{tmp_path}]",
                                          "model.max_length=100"])
    with pytest.raises(ValueError, match="template alone takes 135 tokens"):
        run_train(cfg)


@pytest.mark.parametrize("given, expected", [("9.0a", "9.0"), ("8.0 8.6 9.0a+PTX", "8.0;8.6;9.0+PTX"),
                                             ("7.5;8.0+PTX", "7.5;8.0+PTX"), ("9.0 9.0a 10.0f", "9.0;10.0")])
def test_cuda_arch_list_is_rewritten_to_what_deepspeeds_jit_builder_parses(given, expected, monkeypatch):
    """An H100 image set TORCH_CUDA_ARCH_LIST=9.0a and DeepSpeed's fused Adam failed to build (seen on the GPU
    check); its builder parses the rewritten list."""
    from deepspeed.ops.op_builder.builder import CUDAOpBuilder

    from wildreward.train.engine import jit_arch_list

    assert jit_arch_list(given) == expected

    class Builder(CUDAOpBuilder):
        BUILD_VAR, NAME = "DS_BUILD_WILDREWARD_TEST", "wildreward_test"

        def absolute_name(self):
            return self.NAME

        def sources(self):
            return []

    builder = Builder(name=Builder.NAME)
    builder.jit_mode = True
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", expected)
    builder.compute_capability_args()  # raised ValueError on "9.0a"
