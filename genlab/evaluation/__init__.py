"""Evaluating generators: the feature extractors a metric reads images with (a classifier trained on the
data when no pretrained network is given), sample quality during training (the monitor), and the
`genlab eval` report. The metrics themselves, pure functions of features and images, are genlab.metrics."""

from genlab.evaluation.accuracy import conditional_accuracy, generate_samples
from genlab.evaluation.evaluation import EvalConfig, EvalInputs, evaluate_generator, real_data_floor
from genlab.evaluation.features import (
    FeatureExtractor,
    classifier_extractor,
    dataset_extractor,
    resolve_extractor,
)

__all__ = [
    "EvalConfig",
    "EvalInputs",
    "FeatureExtractor",
    "classifier_extractor",
    "conditional_accuracy",
    "dataset_extractor",
    "evaluate_generator",
    "generate_samples",
    "real_data_floor",
    "resolve_extractor",
]
