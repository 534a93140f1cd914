"""genlab: a workbench for generative image models, written from first principles on PyTorch."""

from genlab.version import __version__

__all__ = ["__version__", "load_pipeline"]


def __getattr__(name: str):
    # `genlab.load_pipeline` without importing torch and the pipelines on `import genlab` (the CLI's
    # --help stays fast)
    if name == "load_pipeline":
        from genlab.pipelines.auto import load_pipeline

        return load_pipeline
    raise AttributeError(f"module 'genlab' has no attribute {name!r}")
