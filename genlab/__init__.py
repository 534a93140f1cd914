"""genlab: a workbench for generative image models, written from first principles on PyTorch."""

__version__ = "0.1.0"
