"""Image classifiers: the training task, evaluation and prediction (used by attacks and metrics)."""

from genlab.classification.evaluate import evaluate_classifier, predict
from genlab.classification.task import ClassifierTask

__all__ = ["ClassifierTask", "evaluate_classifier", "predict"]
