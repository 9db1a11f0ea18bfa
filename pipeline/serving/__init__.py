"""Serving (DESIGN §10): the FastAPI app, the incremental state cache, the live-suggestion page and the MLflow pyfunc.

Imports: `models`, `pipeline.evaluation.predict`, `pipeline.corpus`, `pipeline.checkpoints`, `pipeline.tracking`,
`pipeline.config`. Never Lightning or `pipeline.training` (a contract in pyproject.toml; a test checks sys.modules).

Public: `app.create_app`, `app.cli` / `app.predict_cli` (the `serve` and `predict` commands); `mixed.predictor_for`,
`mixed.load_for`, `mixed.ServedPredictor`; `request_check.check_request`, `request_check.RequestError` (the one check
of a request that HTTP, the pyfunc and the CLI share); `pyfunc.NextWordModel`; `statecache.StateCache`.
"""
