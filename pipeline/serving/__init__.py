"""Serving (DESIGN §10): the FastAPI app, the incremental state cache, the live-suggestion page and the MLflow pyfunc.

Imports: `models`, `pipeline.evaluation.predict`, `pipeline.corpus`, `pipeline.checkpoints`, `pipeline.tracking`,
`pipeline.config`. Never Lightning or `pipeline.training` (a contract in pyproject.toml; a test checks sys.modules).
"""
