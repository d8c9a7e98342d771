"""The training pipeline: training data, steps into the model store, the promotion gate, evaluation,
retraining, training jobs, MLflow tracking."""
