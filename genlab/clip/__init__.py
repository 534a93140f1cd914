"""CLIP (Radford et al. 2021): contrastive image-text pre-training, zero-shot classification, and the
collapse of training without negatives."""

from genlab.clip.loss import LOSSES, clip_loss, matched_only_loss, mean_pairwise_cosine
from genlab.clip.model import CLIP, CLIPConfig, CLIPOutput
from genlab.clip.task import CLIPTask, ObjectiveConfig, zero_shot_set
from genlab.clip.zero_shot import zero_shot_classify

__all__ = [
    "CLIP",
    "LOSSES",
    "CLIPConfig",
    "CLIPOutput",
    "CLIPTask",
    "ObjectiveConfig",
    "clip_loss",
    "matched_only_loss",
    "mean_pairwise_cosine",
    "zero_shot_classify",
    "zero_shot_set",
]
