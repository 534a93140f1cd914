"""The training engine: schedule, EMA, data order, resume equivalence, stopping, clear errors."""

from __future__ import annotations

import json
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
    with pytest.raises(GenlabError, match="^`steps` must be at least 1 \\(got 0\\)$"):
        TrainConfig(steps=0)
    with pytest.raises(GenlabError, match="`lr`"):
        TrainConfig(lr=-1)
    with pytest.raises(GenlabError, match="`ema_decay`"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(GenlabError, match="`precision`"):
        TrainConfig(precision="fp16")


# ------------------------------------------------------------------------ speed: sync, precision, compile


class NaNTask(ToyTask):
    """The toy task whose loss becomes NaN from its ``bad``-th call on."""

    def __init__(self, bad: int):
        super().__init__()
        self.bad = bad

    def loss(self, model, batch, generator):
        loss, logs = super().loss(model, batch, generator)
        return (loss * float("nan") if self.calls >= self.bad else loss), logs


def test_the_loop_reads_the_device_only_when_it_logs(tmp_path, monkeypatch):
    """No loss.item() or float(grad_norm) per step (each would make the host wait for a GPU): reads of a
    tensor happen once per log record, whatever the number of steps."""
    reads = {"n": 0}
    item, to_float = torch.Tensor.item, torch.Tensor.__float__

    def counted(original):
        def read(self):
            reads["n"] += 1
            return original(self)

        return read

    monkeypatch.setattr(torch.Tensor, "item", counted(item))
    monkeypatch.setattr(torch.Tensor, "__float__", counted(to_float))
    task = ToyTask()
    task.evaluate = lambda model: {}  # type: ignore[method-assign]
    Trainer(task, cfg(steps=40, log_every=20, eval_every=0, checkpoint_every=0), tmp_path / "r").train()
    # two records of loss + grad_norm, and the finiteness checks at the end of the run
    assert reads["n"] <= 8, reads["n"]


def test_a_non_finite_loss_stops_the_run_before_anything_is_saved(tmp_path):
    with pytest.raises(GenlabError, match=r"loss became nan between steps 1 and 4; lower `lr`"):
        Trainer(NaNTask(bad=3), cfg(steps=24, log_every=4, checkpoint_every=4), tmp_path / "r").train()
    assert rundir.checkpoint_dir(tmp_path / "r") is None  # the first save would have been at step 4


def test_precision_resolves_per_task_and_device(tmp_path, monkeypatch):
    from genlab.nn import precision

    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: True)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    # the toy classifier does not take part: auto gives fp32, an explicit bf16 a one-line error
    assert Trainer(ToyTask(), cfg(), tmp_path / "a").precision == "fp32"
    with pytest.raises(GenlabError, match="`precision` bf16: classifier runs train in fp32 only"):
        Trainer(ToyTask(), cfg(precision="bf16"), tmp_path / "b")
    mixed = ToyTask()
    mixed.mixed_precision = True
    assert Trainer(mixed, cfg(), tmp_path / "c").precision == "bf16"
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: False)
    assert Trainer(mixed, cfg(), tmp_path / "d").precision == "fp32"
    assert Trainer(mixed, cfg(precision="bf16"), tmp_path / "e").precision == "bf16"


def test_bf16_autocast_runs_the_forward_in_bf16_only():
    from genlab.nn.precision import autocast

    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with autocast("cpu", "bf16"):
        y = layer(x)
    assert y.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    with autocast("cpu", "fp32"):
        assert layer(x).dtype == torch.float32


def test_a_failing_compile_falls_back_to_eager_with_one_line(tmp_path, monkeypatch):
    """Whatever goes wrong in compiling, the run goes on eager, and ends exactly where an eager run does."""
    from genlab.train import engine

    class Broken(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, *args, **kwargs):
            raise RuntimeError("C++ compile error: cannot find Python.h\nmore detail")

    monkeypatch.setattr(engine, "compiled", Broken)
    monkeypatch.setattr(engine, "compile_problem", lambda device: None)
    lines: list[str] = []
    Trainer(ToyTask(), cfg(compile=True), tmp_path / "c", log=lines.append).train()
    assert lines[-1] == "torch.compile failed (RuntimeError: C++ compile error: cannot find Python.h); " + (
        "training eager"
    )
    Trainer(ToyTask(), cfg(compile=False), tmp_path / "e").train()
    compiled_run, eager_run = state_of(tmp_path / "c"), state_of(tmp_path / "e")
    assert all(torch.equal(compiled_run[k], eager_run[k]) for k in eager_run)


def test_no_compiler_means_eager_with_one_line(tmp_path, monkeypatch):
    from genlab.train import compile as compile_module

    monkeypatch.setattr(compile_module.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert "no C++ compiler" in compile_module.compile_problem(torch.device("cpu"))
    lines: list[str] = []
    Trainer(ToyTask(), cfg(steps=2, compile=True), tmp_path / "r", log=lines.append).train()
    assert lines == ["`compile`: no C++ compiler found (inductor builds CPU kernels with g++ or clang++); "
                     "training eager"]  # fmt: skip
    assert compile_module.want_compile(None, torch.device("cpu")) is False
    assert compile_module.want_compile(None, torch.device("cuda")) is True


# ------------------------------------------------------------------------ resume, locks, damaged runs


def test_resume_after_the_final_evaluation_does_not_log_it_twice(tmp_path):
    """A run killed after its final evaluation (here: one that finished) has nothing left to train; a
    resume keeps the evaluation it already logged instead of logging another."""
    run = tmp_path / "run"
    first = Trainer(ToyTask(), cfg(steps=8, eval_every=0), run).train()
    again = Trainer(ToyTask(), cfg(steps=8, eval_every=0), run, resume=True).train()
    evals = [r for r in rundir.read_metrics(run) if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [8]
    assert again.metrics == first.metrics == {"acc": evals[0]["acc"]}


def test_resume_records_changed_settings_and_refuses_contradicting_ones(tmp_path):
    run = tmp_path / "run"
    Trainer(ToyTask(), cfg(steps=8), run).train()
    with pytest.raises(GenlabError, match=r"`batch_size` 32 contradicts .* `batch_size` 16"):
        Trainer(ToyTask(), cfg(steps=12, batch_size=32), run, resume=True).train()
    with pytest.raises(GenlabError, match=r"`seed` 3 contradicts .* `seed` 0"):
        Trainer(ToyTask(), cfg(steps=12, seed=3), run, resume=True).train()
    Trainer(ToyTask(), cfg(steps=12, lr=0.5), run, resume=True).train()
    assert rundir.read_config(run)["train"]["lr"] == 0.5 and rundir.read_config(run)["train"]["steps"] == 12
    resumed = [r for r in rundir.read_metrics(run) if r["event"] == "resume"]
    assert resumed == [{"event": "resume", "step": 8, "changed": {"lr": [0.01, 0.5], "steps": [8, 12]}}]
    assert all(r["lr"] > 0.01 for r in rundir.read_metrics(run) if r["event"] == "train" and r["step"] > 8)


def test_a_second_writer_is_refused_before_it_writes(tmp_path):
    """Two trainings into one --out: the one that finds the run locked stops and leaves it alone."""
    run = tmp_path / "run"
    with rundir.RunLock(run):
        with pytest.raises(GenlabError, match="being written by another process"):
            Trainer(ToyTask(), cfg(steps=2), run).train()
        assert [p.name for p in run.iterdir()] == [".lock"]


@pytest.mark.parametrize(
    "damage, fragment",
    [
        ("state", "state.json is damaged"),
        ("step", "no whole-number 'step'"),
        ("model", "has no model.safetensors"),
        ("optimizer", "optimizer state"),
    ],
)
def test_resuming_a_damaged_checkpoint_is_one_clear_error(tmp_path, damage, fragment):
    run = tmp_path / "run"
    Trainer(ToyTask(), cfg(steps=2), run).train()
    state_path = run / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    if damage == "state":
        state_path.write_text('"not an object"')
    elif damage == "step":
        state_path.write_text(json.dumps({**state, "step": "2"}))
    elif damage == "model":
        (run / "checkpoint" / "model.safetensors").unlink()
    else:
        state_path.write_text(json.dumps({**state, "optimizer": {"param_groups": 5}}))
    with pytest.raises(GenlabError, match=fragment):
        Trainer(ToyTask(), cfg(steps=4), run, resume=True).train()


# ------------------------------------------------------------------------ the engine's words on the CLI


def test_the_engine_names_parameters_and_the_train_commands_name_their_options(tmp_path, monkeypatch):
    """Python reads `run_dir`, `device`, `compile`; `genlab train KIND` reads --out, --device, --compile,
    in its errors and in what the engine logs while it trains."""
    from click.testing import CliRunner

    from genlab.cli import cli
    from genlab.train import engine
    from genlab.train.distributed import pick_device

    with pytest.raises(GenlabError, match="^unknown `device` 'nonsense'; use auto, cpu, cuda or cuda:N$"):
        pick_device("nonsense")
    held = tmp_path / "held"
    Trainer(ToyTask(), cfg(steps=2), held).train()
    with pytest.raises(GenlabError, match="pass `resume` to continue it or choose another `run_dir`$"):
        Trainer(ToyTask(), cfg(steps=2), held).train()

    def train(*args: str) -> str:
        tiny = ["--data", "digits", "--widths", "4", "--hidden", "8", "--steps", "1", "--no-progress"]
        return CliRunner().invoke(cli, ["train", "classifier", *tiny, *args]).output

    out = train("--out", str(held))
    assert "error: " in out and "pass --resume to continue it or choose another --out" in out
    assert "error: unknown --device 'nonsense'" in train("--device", "nonsense", "--out", str(tmp_path / "d"))
    monkeypatch.setattr(engine, "compile_problem", lambda device: "no compiler here")
    out = train("--compile", "--eval-every", "0", "--sample-every", "0", "--out", str(tmp_path / "c"))
    assert "--compile: no compiler here; training eager" in out and "`" not in out
