"""Building blocks and networks. Nothing here knows about training loops or data sets."""

from genlab.nn.classifier import Classifier, ClassifierConfig

__all__ = ["Classifier", "ClassifierConfig"]
