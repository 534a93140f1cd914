"""genlab: a workbench for generative image models, written from first principles on PyTorch."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `genlab.load_pipeline` without importing torch and the pipelines on `import genlab` (the CLI's
    # --help stays fast)
    if name == "load_pipeline":
        from genlab.pipelines.auto import load_pipeline

        return load_pipeline
    raise AttributeError(f"module 'genlab' has no attribute {name!r}")
