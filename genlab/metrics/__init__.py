"""Numbers about generated images (more metrics arrive with the evaluation issue)."""

from genlab.metrics.accuracy import conditional_accuracy

__all__ = ["conditional_accuracy"]
