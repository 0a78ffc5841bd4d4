"""The pipeline's stage bookkeeping without a Ray head: which stages a forced stage redoes, and what clearing
one deletes (moved out of test_jobs.py, which submits the pipeline to a local Ray head)."""


def test_forcing_a_stage_redoes_it_and_the_stages_after_it(tmp_path):
    from wildreward.pipeline import PipelineConfig, clear_stage, forced_stages

    assert forced_stages(["train"]) == ["train", "eval", "serve", "dpo"]
    assert forced_stages(["dpo", "eval"]) == ["eval", "serve", "dpo"] and forced_stages([]) == []
    # a finished Ray Train run under the train section's checkpoint storage would be resumed and exported again
    cfg = PipelineConfig.model_validate({"output_dir": str(tmp_path / "out"),
                                         "train": {"checkpoint": {"storage_path": str(tmp_path / "ckpt")}}})
    for path in (tmp_path / "out" / "train" / "model", tmp_path / "ckpt" / cfg.train.checkpoint.name,
                 tmp_path / "ckpt" / "another-run", tmp_path / "out" / "extract"):
        path.mkdir(parents=True)
    clear_stage("train", cfg)
    assert not (tmp_path / "out" / "train").exists() and not (tmp_path / "ckpt" / cfg.train.checkpoint.name).exists()
    assert (tmp_path / "ckpt" / "another-run").exists() and (tmp_path / "out" / "extract").exists()


def test_the_labeller_stage_feeds_the_classifier_to_extraction(tmp_path):
    import pytest

    from wildreward.pipeline import PipelineConfig, done_marker, forced_stages, wire

    assert forced_stages(["labeller"])[:2] == ["labeller", "extract"]
    cfg = wire(PipelineConfig.model_validate({
        "output_dir": str(tmp_path), "stages": ["labeller", "extract", "train"],
        "extract": {"annotator": {"backend": "classifier", "classifier": {"model_dir": "/elsewhere"}}}}))
    assert cfg.extract.annotator.classifier.model_dir == str(tmp_path / "labeller" / "model")
    assert cfg.labeller.output_dir == str(tmp_path / "labeller")
    assert done_marker("labeller", cfg).path.endswith("labeller/model/labeller.json")
    with pytest.raises(ValueError, match="labeller stage trains a classifier"):
        PipelineConfig.model_validate({"stages": ["labeller", "extract"]})


def test_the_labeller_config_refuses_a_reward_model_setup():
    import pytest

    from wildreward.extract.classifier import LabellerConfig

    assert LabellerConfig().train.model.input == "feedback"
    LabellerConfig.model_validate({"train": {"model": {"input": "rm"}}})  # the probe does not use it
    with pytest.raises(ValueError, match="model.input=feedback"):
        LabellerConfig.model_validate({"kind": "finetune", "train": {"model": {"input": "rm"}}})
    with pytest.raises(ValueError, match="no training rows"):
        LabellerConfig.model_validate({"use_gold_dev": False, "train": {"model": {"input": "feedback",
                                                                                  "num_levels": 5}}})
