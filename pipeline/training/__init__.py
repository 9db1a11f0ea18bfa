"""Training (DESIGN §6): the LightningModule, the data module, the Trainer with its callbacks and checkpoints, and the
MLflow logger of a training run.

Imports: `models`, `pipeline.corpus`, `pipeline.checkpoints`, `pipeline.tracking`, `pipeline.config`. The only package
that imports Lightning; evaluation and serving never import it.

Public: `train.train` → `TrainResult`, `train.run_dir_for`, `train.DivergenceError`, `train.LanguageModelModule`,
`train.make_trainer`; `logger.make_logger`; `datamodule.CorpusDataModule`.
"""
