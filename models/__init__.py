"""Models of pipecast: close probability, SQO likelihood, baselines, calibration, forecasts."""

#: registered model names in the MLflow model registry (interface.md)
CLOSE_MODEL_NAME = "pipecast-close-probability"
SQO_MODEL_NAME = "pipecast-sqo-likelihood"
#: the registry alias that marks the model in production
CHAMPION_ALIAS = "champion"
