"""Test-wide settings: caches of feature extractors and reference features go to a temporary folder;
under pytest-xdist (`make test` runs two workers) each worker's torch gets its share of the cores."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config) -> None:
    """Two workers on two cores each running torch with two threads would fight over the cores: give each
    worker (and the processes it starts) cores / workers threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Never read or write the user's ~/.cache/genlab from tests."""
    old = os.environ.get("GENLAB_CACHE")
    os.environ["GENLAB_CACHE"] = str(tmp_path_factory.mktemp("genlab-cache"))
    yield
    if old is None:
        os.environ.pop("GENLAB_CACHE", None)
    else:
        os.environ["GENLAB_CACHE"] = old


SHORT = ["--steps", "2", "--eval-every", "0", "--sample-every", "0", "--no-progress"]


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory):
    """Tiny runs of every kind the web app serves (tests/test_server.py, tests/test_browser.py)."""
    from click.testing import CliRunner

    from genlab.cli import cli
    from genlab.data import DataConfig
    from genlab.diffusion.task import DiffusionConfig, DiffusionTask
    from genlab.train import TrainConfig, Trainer, seed_step

    def _cli(*args: str) -> None:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output

    root = tmp_path_factory.mktemp("serve")
    _cli("train", "diffusion", "--data", "digits", "--cond", "class", "--channel-mults", "1,2",
         "--attention-levels", "1", "--base-channels", "16", "--out", str(root / "diffusion"),
         *SHORT)  # fmt: skip
    _cli("train", "gan", "--data", "digits", "--width", "8", "--z-dim", "8", "--batch-size", "8",
         "--features", "none", "--out", str(root / "gan"), *SHORT)  # fmt: skip
    _cli("train", "classifier", "--data", "digits", "--out", str(root / "classifier"), *SHORT)
    seed_step(0, -1)
    task = DiffusionTask(
        DataConfig("shapes"),
        DiffusionConfig(cond="text", sample_steps=2),
        text_options=dict(width=32, layers=1, heads=2),
        base_channels=16,
        channel_mults=(1, 2),
        attention_levels=(1,),
        head_dim=16,
    )
    cfg = TrainConfig(steps=2, batch_size=8, eval_every=0, sample_every=0, checkpoint_every=0, progress=False)
    Trainer(task, cfg, root / "t2i").train()
    return root


@pytest.fixture(scope="session")
def sd_checkpoints(tmp_path_factory):
    """Tiny Stable Diffusion checkpoints ("sd15": epsilon, "sd21": v-prediction) written by diffusers'
    save_pretrained (tests/sd_fixtures.py); skipped where diffusers or transformers are missing."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from sd_fixtures import write_checkpoint

    root = tmp_path_factory.mktemp("sd")
    return {variant: write_checkpoint(root / variant, variant) for variant in ("sd15", "sd21")}


@pytest.fixture(scope="session")
def clip_run(tmp_path_factory):
    """An untrained CLIP on shapes' vocabulary, saved as a run (weights matter, not quality)."""
    import torch

    from genlab.clip.model import CLIP, CLIPConfig
    from genlab.data import load_dataset
    from genlab.nn.text import TextEncoderConfig, Tokenizer

    torch.manual_seed(0)
    captions = load_dataset("shapes", "train").captions
    tok = Tokenizer.train(captions, "word")
    length = max(len(tok.tokens(c)) for c in captions) + 2
    tok.config.max_length = length
    text = TextEncoderConfig(vocab_size=tok.vocab_size, max_length=length, width=32, layers=1, heads=2)
    model = CLIP(CLIPConfig(text=text, tokenizer=tok.config, widths=(8, 16), image_hidden=32, embed_dim=16))
    run = tmp_path_factory.mktemp("clip") / "clip"
    model.save_pretrained(run)
    return run
