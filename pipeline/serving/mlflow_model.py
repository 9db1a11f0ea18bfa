"""The pyfunc entry point MLflow loads ("models from code"): no pickled Python object is stored with the model."""
import mlflow

from pipeline.serving.pyfunc import NextWordModel

mlflow.models.set_model(NextWordModel())
