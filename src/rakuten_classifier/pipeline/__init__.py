"""The training pipeline: training data, steps into the model store, the promotion gate, evaluation,
retraining, the training job process and its status file, MLflow tracking."""
