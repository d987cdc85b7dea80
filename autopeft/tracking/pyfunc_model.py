"""The MLflow model of a trained folder, logged as code ("models from code"): MLflow runs this file when it loads
the model, so nothing is pickled. It answers a DataFrame of the task's text columns with
:class:`autopeft.inference.Predictor`'s columns (the label and each class's probability, or the score)."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

MODEL_ARTIFACT = "model"
"""The artifact that holds the trained folder."""


class TrainedFolderModel(PythonModel):
    """A trained folder behind MLflow's pyfunc interface (loads and serves with ``--env-manager local``)."""

    def load_context(self, context) -> None:
        from autopeft.inference import Predictor

        self.predictor = Predictor(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.predictor.predict(model_input)


mlflow.models.set_model(TrainedFolderModel())
