"""Experiments (DESIGN §8): gradient by distance, the exploding demo, the controlled long-range task, the comparison
grid and its report; and trained_run.py, the train → evaluate → log path of one configuration as one MLflow run, which
the grid and `make run` (pipeline/job.py) share.

Imports: any stage below it (corpus, training, evaluation, tracking); nothing imports it but the commands and
pipeline/job.py.

Public: `experiment.run_experiment` and its commands (`experiment.cli`, `experiment.gradients_cli`); `longrange.cli`,
`longrange.run_longrange`; `report.write_report`, `report.cli`; `trained_run.train_run`, `trained_run.log_evaluation`;
`gradients.gradient_curves`, `gradients.plot_gradient_by_distance`.
"""
