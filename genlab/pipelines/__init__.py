"""Ready-to-use generators built from run directories, in the manner of diffusers pipelines."""

from genlab.pipelines.diffusion import DiffusionPipeline, PipelineOutput
from genlab.pipelines.text_to_image import TextToImageOutput, TextToImagePipeline

__all__ = ["DiffusionPipeline", "PipelineOutput", "TextToImageOutput", "TextToImagePipeline"]
