"""The training engine every model kind shares.

A *task* says what to train (its model, data and loss); the engine does the rest the same way for all:
AdamW, warm-up + cosine learning rate, gradient clipping, an EMA copy of the weights, a data order and
randomness fixed by the seed, a tqdm bar with loss and images/s, ``metrics.jsonl``, periodic evaluation
and sample grids, stopping by steps or minutes, Ctrl-C that saves and exits, ``resume`` that continues
exactly where the run stopped, and DDP under ``torchrun``.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from genlab import rundir
from genlab.data.base import ImageDataset
from genlab.errors import GenlabError, param
from genlab.nn.precision import autocast, resolve_precision
from genlab.nn.pretrained import config_from_dict, config_to_dict, load_state
from genlab.train import distributed
from genlab.train.compile import compile_problem, compiled, want_compile
from genlab.train.config import TrainConfig
from genlab.train.ema import EMA
from genlab.train.optim import make_optimizer, optimizer_state_from_safe, optimizer_state_to_safe
from genlab.train.order import BatchOrder, seed_step
from genlab.train.schedule import warmup_cosine_lr

_HORIZON_PROBE_STEPS = 20  # steps timed before a minutes-only run fixes its schedule horizon
_FIXED_ON_RESUME = ("batch_size", "seed")  # TrainConfig fields a resume may not change


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass
class Batch:
    """One process's share of a global batch, on the training device."""

    images: torch.Tensor
    labels: torch.Tensor | None
    captions: list[str]
    indices: torch.Tensor
    step: int = 0  # the optimizer step this batch is for (curricula, e.g. an epsilon ramp)

    def __len__(self) -> int:
        return self.images.shape[0]


class Task:
    """What to train. Subclasses set ``kind``, ``model`` (a PretrainedMixin module) and ``train_data``.

    ``mixed_precision``: the task's forward pass may run under bfloat16 autocast (TrainConfig.precision);
    tasks whose numbers were measured in float32 only (attacks, games with gradient penalties) leave it
    off.
    """

    kind: str
    model: nn.Module
    train_data: ImageDataset
    mixed_precision: bool = False

    def config_sections(self) -> dict[str, Any]:
        """Extra sections of config.json besides ``model`` and ``train`` (e.g. ``data``)."""
        return {}

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """The scalar to minimise and any extra numbers to log; ``model`` may be DDP-wrapped."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation numbers for ``model`` (the EMA copy when kept); called on the main process only."""
        return {}

    def sample(self, model: nn.Module, path: Path) -> Path | None:
        """Write a picture of what ``model`` does now (a sample grid) to ``path``; main process only."""
        return None

    def optimizers(self, model: nn.Module, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """The optimizers, by name; one AdamW over the whole model unless the task plays a game (a GAN
        has one per player). Each param group's ``lr`` is its peak: the engine scales it by the schedule."""
        return {"model": make_optimizer(model, cfg)}

    def distribute(self, model: nn.Module, dist: distributed.DistInfo) -> nn.Module:
        """``model`` ready for a multi-process run: in DDP, unless ``step`` averages gradients itself."""
        return DistributedDataParallel(
            model, device_ids=[dist.device] if dist.device.type == "cuda" else None
        )

    def step(
        self,
        net: nn.Module,
        batch: Batch,
        generator: torch.Generator,
        optimizers: dict[str, torch.optim.Optimizer],
        cfg: TrainConfig,
    ) -> tuple[torch.Tensor, dict]:
        """One optimizer step: minimise ``loss`` with gradient clipping. Returns the loss and the logs,
        as tensors or numbers: nothing here waits for the device (the engine reads them when it logs, and
        checks there that the loss stayed finite). ``cfg.precision`` is resolved ("bf16" or "fp32")."""
        with autocast(batch.images.device, cfg.precision):
            loss, logs = self.loss(net, batch, generator)
        optimizer = optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_gradients(optimizer, cfg.grad_clip)
        optimizer.step()
        return loss.detach(), {**logs, "grad_norm": grad_norm}


class NonFiniteLoss(GenlabError):
    """A loss became NaN or infinite; the engine adds the step and learning rate to the message."""


def check_finite(value: torch.Tensor, name: str) -> None:
    if not torch.isfinite(value).all():
        raise NonFiniteLoss(f"{name} became {value.detach().float().mean().item()}")


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip the global L2 norm of the gradients of ``optimizer``'s parameters (0: no clipping); the norm,
    as a tensor on the device (reading it would wait for the device)."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf).detach()


def _optimizer_key(name: str) -> str:
    """The checkpoint name of optimizer ``name`` ("optimizer" for a single-optimizer task, as always)."""
    return "optimizer" if name == "model" else f"optimizer_{name}"


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    interrupted: bool
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


class _StopFlag:
    """Ctrl-C / SIGTERM ask for a clean stop at the next step boundary; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Runs a Task; one instance per run (``train()`` may be called once)."""

    def __init__(
        self,
        task: Task,
        cfg: TrainConfig,
        run_dir: str | Path,
        resume: bool = False,
        log: Callable[[str], None] | None = None,
        local: bool = False,
        sections: dict[str, Any] | None = None,
    ):
        """``local``: train in this process alone, also inside a torchrun job (``distributed.setup``).
        ``sections``: more sections for a new run's config.json (the command's options)."""
        if cfg.steps is None and cfg.minutes is None:
            raise GenlabError("say how long to train: `steps` N, `minutes` M, or both")
        self.task, self.cfg, self.run_dir, self.resume = task, cfg, Path(run_dir), resume
        self.sections = sections or {}
        self.dist = distributed.setup(cfg.device, local=local)
        if cfg.batch_size % self.dist.world_size:
            raise GenlabError(
                f"`batch_size` {cfg.batch_size} does not split over {self.dist.world_size} processes; "
                f"use a multiple of {self.dist.world_size}"
            )
        if len(task.train_data) == 0:
            raise GenlabError("the training data set is empty")
        precision = resolve_precision(cfg.precision, self.dist.device)
        if precision == "bf16" and not task.mixed_precision:
            if cfg.precision == "bf16":
                raise GenlabError(f"`precision` bf16: {task.kind} runs train in fp32 only; drop `precision`")
            precision = "fp32"
        self.precision = precision
        self.log = log or (lambda message: tqdm.write(message) if self.dist.is_main else None)
        self.stop = _StopFlag()

    def request_stop(self) -> None:
        """Stop cleanly (saving a checkpoint) after the current step, as Ctrl-C does."""
        self.stop.requested = True

    # ------------------------------------------------------------------------------------------------

    def _check_run_dir(self) -> None:
        has_ckpt = rundir.checkpoint_dir(self.run_dir) is not None
        if self.resume and not has_ckpt:
            raise GenlabError(
                f"{self.run_dir} has no checkpoint to resume; drop `resume` to start a new run there"
            )
        if not self.resume and (has_ckpt or (self.run_dir / rundir.CONFIG_FILE).exists()):
            raise GenlabError(
                f"{self.run_dir} already holds a run; pass `resume` to continue it or choose another "
                "`run_dir`"
            )
        if self.resume:
            rundir.read_config(self.run_dir, kind=self.task.kind)

    def _save(self, step: int, horizon: int, elapsed: float) -> None:
        if not self.dist.is_main:
            return
        weights = {"model": self.model.state_dict()}
        state: dict[str, Any] = {"step": step, "horizon": horizon, "elapsed_seconds": elapsed}
        for name, optimizer in self.optimizers.items():
            weights[_optimizer_key(name)], state[_optimizer_key(name)] = optimizer_state_to_safe(optimizer)
        if self.ema is not None:
            weights["ema"] = self.ema.model.state_dict()
        state.update(train=asdict(self.cfg), world_size=self.dist.world_size)
        rundir.save_checkpoint(self.run_dir, weights, state)

    def _restore(self) -> tuple[int, int | None, float]:
        weights, state = rundir.load_checkpoint(self.run_dir)
        where = self.run_dir / rundir.CHECKPOINT_DIR
        step, horizon, elapsed = state.get("step"), state.get("horizon"), state.get("elapsed_seconds", 0.0)
        if not _whole(step) or not (horizon is None or _whole(horizon)):
            raise GenlabError(f"{where / rundir.STATE_FILE} is damaged: no whole-number 'step' and 'horizon'")
        if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not elapsed >= 0:
            elapsed = 0.0  # only reported, never used to train
        if "model" not in weights:
            raise GenlabError(f"{where} has no model.safetensors; the checkpoint is incomplete")
        load_state(self.model, weights["model"], where / "model.safetensors")
        if self.ema is not None:
            load_state(self.ema.model, weights.get("ema", weights["model"]), where)
        try:
            for name, optimizer in self.optimizers.items():
                key = _optimizer_key(name)
                optimizer.load_state_dict(optimizer_state_from_safe(weights[key], state[key]))
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise GenlabError(
                f"optimizer state in {where} is missing, damaged or does not fit this model ({e!r})"
            ) from None
        return step, horizon, float(elapsed)

    def _record_changes(self, step: int) -> None:
        """Compare the settings of this resume with the run's: the batch size and the seed fix the data
        order and all randomness, so changing them would not continue the run but make another, and is
        refused; the others (steps, learning rate, cadences...) may change, and the change is written to
        config.json's ``train`` and as a ``resume`` record in metrics.jsonl, so the run says what it
        trained with."""
        config = rundir.read_config(self.run_dir, kind=self.task.kind)
        saved, now = config.get("train", {}), asdict(self.cfg)
        for name in _FIXED_ON_RESUME:
            if name in saved and saved[name] != now[name]:
                option = param(name)
                raise GenlabError(
                    f"{option} {now[name]} contradicts the run in {self.run_dir}, which trains with "
                    f"{option} {saved[name]}; drop {option} to resume it, or start a new run"
                )
        changed = {k: [saved.get(k), v] for k, v in now.items() if k != "progress" and saved.get(k) != v}
        if changed:
            config["train"] = {**saved, **{k: now[k] for k in changed}}
            rundir.atomic_write_json(self.run_dir / rundir.CONFIG_FILE, config)
            rundir.append_metrics(self.run_dir, {"event": "resume", "step": step, "changed": changed})

    def _batch(self, order: BatchOrder, step: int) -> Batch:
        idx = order.indices(step, self.dist.rank, self.dist.world_size)
        data = self.task.train_data
        dev = self.dist.device
        labels = data.labels[idx].to(dev) if data.labels is not None else None
        return Batch(data.images[idx].to(dev), labels, [data.captions[i] for i in idx.tolist()], idx, step)

    def _maybe_compiled(self, net: nn.Module) -> nn.Module:
        """``net`` under torch.compile when ``cfg.compile`` (or auto) asks and this machine can; else
        ``net``."""
        if not want_compile(self.cfg.compile, self.dist.device):
            return net
        problem = compile_problem(self.dist.device)
        if problem:
            self.log(f"{param('compile')}: {problem}; training eager")
            return net
        self.log("compiling the training step with torch.compile (the first step takes a while)")
        return compiled(net)

    def _window_loss(self, total: torch.Tensor, steps: int, step: int) -> float:
        """The mean loss of the last ``steps`` steps (a read that waits for the device), or a one-line
        error if it is not finite, before anything is evaluated or saved."""
        mean = float(total) / steps
        if not math.isfinite(mean):
            first = step - steps + 1
            where = f"at step {first}" if steps == 1 else f"between steps {first} and {step}"
            raise GenlabError(
                f"the loss became {mean} {where}; lower `lr` (now {self.cfg.lr}) or check the data"
            )
        return mean

    def _eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model

    def _evaluate(self, step: int) -> dict[str, float]:
        model = self._eval_model()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate(model)
        model.train(was_training)
        if metrics:
            rundir.append_metrics(self.run_dir, {"event": "eval", "step": step, **metrics})
        return metrics

    def _logged_evaluation(self, step: int) -> dict[str, float]:
        """The metrics of the evaluation logged at ``step``, or {} when there is none."""
        for record in reversed(rundir.read_metrics(self.run_dir)):
            if record["event"] == "eval" and record["step"] == step:
                return {k: v for k, v in record.items() if k not in ("event", "step")}
        return {}

    def _sample(self, step: int) -> None:
        model = self._eval_model()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.task.sample(model, self.run_dir / "samples" / f"step_{step:06d}.png")
        model.train(was_training)

    # ------------------------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        """Train to the end (or to a stop), saving checkpoints, metrics, evaluations and samples. The main
        process holds the run directory's lock throughout (rundir.RunLock); the others write nothing."""
        if not self.dist.is_main:
            return self._train()
        if self.resume and not self.run_dir.is_dir():
            self._check_run_dir()  # says that there is nothing to resume, before a folder is made
        with rundir.RunLock(self.run_dir):
            return self._train()

    def _train(self) -> TrainResult:
        cfg, d = self.cfg, self.dist
        if d.is_main:
            self._check_run_dir()
        self.model = self.task.model.to(d.device)
        self.model.train()
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.optimizers = self.task.optimizers(self.model, cfg)
        # A group's peak may differ from `lr` (a GAN's players); restoring replaces the group dicts.
        peaks = {name: [g["lr"] / cfg.lr for g in o.param_groups] for name, o in self.optimizers.items()}
        step, horizon, elapsed_before = 0, cfg.steps, 0.0
        if self.resume:
            step, saved_horizon, elapsed_before = self._restore()
            horizon = cfg.steps if cfg.steps is not None else saved_horizon
            if d.is_main:
                self._record_changes(step)  # or refuses, before anything is written
                rundir.truncate_metrics(self.run_dir, step)
        elif d.is_main:
            rundir.write_config(
                self.run_dir,
                self.task.kind,
                model=config_to_dict(self.model.config),
                train=asdict(cfg),
                **self.task.config_sections(),
                **self.sections,
            )
        net: nn.Module = self.model
        if d.enabled:
            net = self.task.distribute(self.model, d)
        eager, net = net, self._maybe_compiled(net)
        step_cfg = replace(cfg, precision=self.precision)  # what Task.step sees: "bf16" or "fp32"

        order = BatchOrder(len(self.task.train_data), cfg.batch_size, cfg.seed)
        start_step, t_start = step, time.perf_counter()
        deadline = t_start + cfg.minutes * 60 if cfg.minutes is not None else math.inf
        bar = tqdm(
            total=horizon or 0,
            initial=step,
            desc=f"train {self.task.kind}",
            unit="step",
            disable=not (cfg.progress and d.is_main),
            dynamic_ncols=True,
        )
        # The loss is summed where it is computed and read once per log record: a read per step would make
        # the host wait for a GPU at every step.
        window_t, window_steps, last_metrics = time.perf_counter(), 0, {}
        window_loss = torch.zeros((), device=d.device)
        interrupted = False
        with self.stop:
            while horizon is None or step < horizon:
                generator = seed_step(cfg.seed, step, d.rank)
                warmup = min(cfg.warmup_steps, (horizon or 10**9) // 10)
                lr = warmup_cosine_lr(step, cfg.lr, warmup, horizon or 10**9, cfg.min_lr_ratio)
                for name, optimizer in self.optimizers.items():
                    for group, ratio in zip(optimizer.param_groups, peaks[name], strict=True):
                        group["lr"] = lr * ratio
                batch = self._batch(order, step)
                try:
                    loss, logs = self.task.step(net, batch, generator, self.optimizers, step_cfg)
                except NonFiniteLoss as e:
                    raise GenlabError(
                        f"{e} at step {step}; lower `lr` (now {cfg.lr}) or check the data"
                    ) from None
                except GenlabError:
                    raise
                except Exception as e:
                    if net is eager:
                        raise
                    reason = (str(e).strip().splitlines() or [""])[0][:200]
                    self.log(f"torch.compile failed ({type(e).__name__}: {reason}); training eager")
                    net = eager
                    generator = seed_step(cfg.seed, step, d.rank)  # the step's randomness, afresh
                    loss, logs = self.task.step(net, batch, generator, self.optimizers, step_cfg)
                if self.ema is not None:
                    self.ema.update(self.model, step)
                step += 1
                window_steps += 1
                window_loss += loss.float()
                bar.update(1)

                if horizon is None and step - start_step == _HORIZON_PROBE_STEPS:
                    rate = (step - start_step) / (time.perf_counter() - t_start)
                    remaining = deadline - time.perf_counter()
                    horizon = distributed.broadcast_int(step + int(0.9 * rate * remaining), d)
                    bar.total = horizon
                    bar.refresh()

                if step % cfg.log_every == 0 or step == horizon:
                    mean_loss = self._window_loss(window_loss, window_steps, step)
                    dt = time.perf_counter() - window_t
                    record = {
                        "event": "train",
                        "step": step,
                        "epoch": round(order.epoch(step), 4),
                        "loss": mean_loss,
                        "lr": lr,
                        "images_per_s": window_steps * cfg.batch_size / max(dt, 1e-9),
                        "elapsed_s": elapsed_before + time.perf_counter() - t_start,
                        **{k: float(v) for k, v in logs.items()},
                    }
                    bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
                    if d.is_main:
                        rundir.append_metrics(self.run_dir, record)
                    window_t, window_steps = time.perf_counter(), 0
                    window_loss.zero_()

                finished = horizon is not None and step >= horizon
                stop = distributed.any_true(self.stop.requested or time.perf_counter() > deadline, d)
                if finished or stop:
                    interrupted = stop and not finished
                    break
                evaluate = d.is_main and cfg.eval_every and step % cfg.eval_every == 0
                draw = d.is_main and cfg.sample_every and step % cfg.sample_every == 0
                save = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
                if evaluate or draw or save:  # never evaluate or keep weights a non-finite loss has reached
                    self._window_loss(window_loss, max(window_steps, 1), step)
                if evaluate:
                    last_metrics = self._evaluate(step)
                if draw:
                    self._sample(step)
                if save:
                    self._save(step, horizon or step, elapsed_before + time.perf_counter() - t_start)
        bar.close()
        self._window_loss(window_loss, max(window_steps, 1), step)

        elapsed = elapsed_before + time.perf_counter() - t_start
        self._save(step, horizon or step, elapsed)
        if d.is_main:
            # A run killed after its final evaluation and resumed has nothing left to train: its evaluation
            # at this step is in metrics.jsonl already and is not logged twice.
            last_metrics = self._logged_evaluation(step) or self._evaluate(step) or last_metrics
            self._sample(step)
        if d.enabled:
            torch.distributed.barrier()
            distributed.teardown()
        return TrainResult(self.run_dir, step, interrupted, last_metrics, elapsed)


def train(task: Task, cfg: TrainConfig, run_dir: str | Path, resume: bool = False) -> TrainResult:
    """Train ``task`` into ``run_dir`` (see Trainer)."""
    return Trainer(task, cfg, run_dir, resume).train()


def resolve_train_config(run_dir: str | Path, overrides: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a run was started with, updated by the options given again on the command line."""
    config = rundir.read_config(run_dir)
    saved = dict(config.get("train", {}))
    saved.update(overrides)
    return config_from_dict(TrainConfig, saved, f"{run_dir}/config.json")
