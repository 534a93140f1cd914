"""The training engine: schedule, EMA, data order, resume equivalence, stopping, clear errors."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F

from genlab import rundir
from genlab.data.base import ImageDataset
from genlab.errors import GenlabError
from genlab.nn import Classifier, ClassifierConfig
from genlab.train import Batch, BatchOrder, Task, TrainConfig, Trainer, seed_step
from genlab.train.ema import EMA
from genlab.train.schedule import warmup_cosine_lr


def toy_data(n: int = 96, seed: int = 0) -> ImageDataset:
    """Three classes of 8x8 images told apart by which third of the image is bright."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    for k in range(3):
        images[labels == k, :, :, 3 * k : 3 * k + 2] += 0.7
    return ImageDataset(
        "toy",
        images.clamp(0, 1),
        [f"class {int(y)}" for y in labels],
        labels,
        ["0", "1", "2"],
        [{} for _ in range(n)],
    )


class ToyTask(Task):
    kind = "classifier"

    def __init__(self, interrupt_at: int | None = None):
        seed_step(0, -1)
        self.train_data = toy_data()
        self.model = Classifier(
            ClassifierConfig(image_size=8, num_classes=3, widths=(4,), hidden=8, dropout=0.2)
        )
        self.interrupt_at, self.calls = interrupt_at, 0

    def loss(self, model, batch: Batch, generator: torch.Generator):
        self.calls += 1
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered in the middle of a step
        noise = 0.05 * torch.randn(
            batch.images.shape, generator=generator
        )  # randomness from the step's generator
        logits = model(batch.images + noise)
        return F.cross_entropy(logits, batch.labels), {}

    def evaluate(self, model):
        with torch.no_grad():
            acc = (model(self.train_data.images).argmax(1) == self.train_data.labels).float().mean()
        return {"acc": float(acc)}


def cfg(**kw) -> TrainConfig:
    base = dict(
        steps=24,
        batch_size=16,
        lr=1e-2,
        warmup_steps=5,
        ema_decay=0.9,
        log_every=4,
        eval_every=8,
        sample_every=0,
        checkpoint_every=8,
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def state_of(run) -> dict[str, torch.Tensor]:
    weights, state = rundir.load_checkpoint(run)
    flat = {f"{name}.{k}": v for name, tensors in weights.items() for k, v in tensors.items()}
    return flat


# ---------------------------------------------------------------------------------------------- pieces


def test_warmup_cosine_matches_formula():
    lr = lambda s: warmup_cosine_lr(s, 1.0, warmup_steps=10, total_steps=110, min_ratio=0.1)  # noqa: E731
    assert lr(0) == pytest.approx(0.1)
    assert lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.1 + 0.5 * 0.9 * (1 + math.cos(math.pi * 0.5)))  # halfway: the mean
    assert lr(110) == pytest.approx(0.1)
    assert lr(500) == pytest.approx(0.1)
    assert all(lr(s) >= lr(s + 1) for s in range(10, 120))


def test_ema_follows_its_formula():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, num_updates=0)  # decay min(0.5, 1/10) = 0.1: shadow = 0.1*0 + 0.9*1
    assert ema.model.weight.item() == pytest.approx(0.9)
    ema.update(model, num_updates=100)  # decay 0.5
    assert ema.model.weight.item() == pytest.approx(0.5 * 0.9 + 0.5)
    assert not ema.model.weight.requires_grad


def test_batch_order_is_fixed_by_seed_and_covers_each_epoch():
    a, b, c = BatchOrder(10, 4, seed=1), BatchOrder(10, 4, seed=1), BatchOrder(10, 4, seed=2)
    first = torch.cat([a.global_indices(s) for s in range(5)])  # 20 positions = two epochs
    assert torch.equal(first, torch.cat([b.global_indices(s) for s in range(5)]))
    assert not torch.equal(first, torch.cat([c.global_indices(s) for s in range(5)]))
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    # Random access gives the same batch as sequential access (what resume relies on).
    assert torch.equal(BatchOrder(10, 4, seed=1).global_indices(3), first[12:16])


def test_ranks_split_the_global_batch():
    order = BatchOrder(50, 8, seed=0)
    shards = [order.indices(7, rank=r, world=2) for r in range(2)]
    assert sorted(torch.cat(shards).tolist()) == sorted(order.global_indices(7).tolist())
    assert len(shards[0]) == len(shards[1]) == 4


# ---------------------------------------------------------------------------------------------- engine


def test_training_learns_and_writes_a_run(tmp_path):
    run = tmp_path / "run"
    result = Trainer(ToyTask(), cfg(steps=40), run).train()
    assert result.step == 40 and not result.interrupted
    assert result.metrics["acc"] > 0.9
    for name in (
        "config.json",
        "model.safetensors",
        "ema.safetensors",
        "metrics.jsonl",
        "checkpoint/state.json",
    ):
        assert (run / name).is_file(), name
    records = rundir.read_metrics(run)
    train_steps = [r["step"] for r in records if r["event"] == "train"]
    assert train_steps == list(range(4, 41, 4))
    assert all(
        {"loss", "lr", "grad_norm", "images_per_s"} <= r.keys() for r in records if r["event"] == "train"
    )
    reloaded = Classifier.from_pretrained(run)
    ema = rundir.load_weights(run / "ema.safetensors")
    assert all(torch.equal(v, ema[k]) for k, v in reloaded.state_dict().items())


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = Trainer(ToyTask(), cfg(steps=10), tmp_path / "a").train()
    b = Trainer(ToyTask(), cfg(steps=10), tmp_path / "b").train()
    c = Trainer(ToyTask(), cfg(steps=10, seed=5), tmp_path / "c").train()
    wa, wb, wc = (rundir.load_weights(r.run_dir / "model.safetensors") for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_ctrl_c_then_resume_equals_one_uninterrupted_run(tmp_path):
    full = Trainer(ToyTask(), cfg(), tmp_path / "full").train()
    assert full.step == 24

    part = Trainer(ToyTask(interrupt_at=11), cfg(), tmp_path / "split").train()
    assert part.interrupted and part.step == 11  # stopped after the step Ctrl-C arrived in, and saved it
    rest = Trainer(ToyTask(), cfg(), tmp_path / "split", resume=True).train()
    assert rest.step == 24 and not rest.interrupted

    a, b = state_of(tmp_path / "full"), state_of(tmp_path / "split")
    assert a.keys() == b.keys() and any(k.startswith("optimizer.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k  # model, EMA and optimizer identical bit for bit
    steps = [r["step"] for r in rundir.read_metrics(tmp_path / "split") if r["event"] == "train"]
    assert steps == sorted(set(steps))  # no step logged twice


def test_stop_by_minutes_fits_the_schedule(tmp_path, monkeypatch):
    """With --minutes alone the horizon comes from the speed of the first steps, on a fake clock."""
    from genlab.train import engine

    clock = iter(range(10**6))  # every reading of the clock is one second after the last
    monkeypatch.setattr(engine.time, "perf_counter", lambda: float(next(clock)))
    result = Trainer(ToyTask(), cfg(steps=None, minutes=1.0, checkpoint_every=0), tmp_path / "r").train()
    _, state = rundir.load_checkpoint(tmp_path / "r")
    assert 20 < state["horizon"] < 60 and result.step == state["horizon"]  # 60 s budget, >1 s per step
    assert not result.interrupted


def test_refuses_to_overwrite_and_to_resume_nothing(tmp_path):
    Trainer(ToyTask(), cfg(steps=2), tmp_path / "r").train()
    with pytest.raises(GenlabError, match="already holds a run"):
        Trainer(ToyTask(), cfg(steps=2), tmp_path / "r").train()
    with pytest.raises(GenlabError, match="no checkpoint to resume"):
        Trainer(ToyTask(), cfg(steps=2), tmp_path / "empty", resume=True).train()
    with pytest.raises(GenlabError, match="how long"):
        Trainer(ToyTask(), cfg(steps=None), tmp_path / "x")


def test_bad_train_settings_are_clear():
    with pytest.raises(GenlabError, match="--steps"):
        TrainConfig(steps=0)
    with pytest.raises(GenlabError, match="--lr"):
        TrainConfig(lr=-1)
    with pytest.raises(GenlabError, match="--ema-decay"):
        TrainConfig(ema_decay=1.0)
