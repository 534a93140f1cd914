"""Ready-to-use generators built from run directories, in the manner of diffusers pipelines."""

from genlab.pipelines.diffusion import DiffusionPipeline, PipelineOutput

__all__ = ["DiffusionPipeline", "PipelineOutput"]
