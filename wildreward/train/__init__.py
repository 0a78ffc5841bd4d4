"""Training stage: pointwise ordinal reward model on Ray Train + DeepSpeed ZeRO (paper §2).

``config`` (TrainConfig) -> ``pipeline.run_train`` (driver: data checks, TorchTrainer, export, report) ->
``loop.train_loop`` (per worker) using ``data`` (tokenise, length-grouped batches), ``engine`` (DeepSpeed or
DDP) and ``common`` (collectives, seeding, metrics log, checkpoint and restore). ``engine`` and ``common`` are the
worker scaffolding online DPO (:mod:`wildreward.dpo.loop`) builds on too. The math is in :mod:`wildreward.ordinal`;
the saved model format in :mod:`wildreward.rm`.
"""
