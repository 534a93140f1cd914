"""Ready-to-use generators built from run directories, in the manner of diffusers pipelines."""

from genlab.pipelines.auto import PIPELINE_KINDS, kind_of, load_pipeline, pipeline_kind
from genlab.pipelines.diffusion import DiffusionPipeline, PipelineOutput
from genlab.pipelines.text_to_image import TextToImageOutput, TextToImagePipeline
from genlab.pipelines.video import VideoOutput, VideoPipeline

__all__ = [
    "PIPELINE_KINDS",
    "DiffusionPipeline",
    "PipelineOutput",
    "TextToImageOutput",
    "TextToImagePipeline",
    "VideoOutput",
    "VideoPipeline",
    "kind_of",
    "load_pipeline",
    "pipeline_kind",
]
