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
