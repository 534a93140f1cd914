"""Metrics of generated images: accuracy, FID/KID, precision/recall, coverage, memorization, reports."""

from genlab.metrics.accuracy import conditional_accuracy, generate_samples
from genlab.metrics.evaluation import EvalConfig, evaluate_generator, real_data_floor
from genlab.metrics.features import (
    FeatureExtractor,
    classifier_extractor,
    dataset_extractor,
    resolve_extractor,
)

__all__ = [
    "EvalConfig",
    "FeatureExtractor",
    "classifier_extractor",
    "conditional_accuracy",
    "dataset_extractor",
    "evaluate_generator",
    "generate_samples",
    "real_data_floor",
    "resolve_extractor",
]
