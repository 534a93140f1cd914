"""Run directories: the unit of exchange between training, sampling, evaluation and the server.

A run directory holds

    config.json          what the run is: {"genlab_format", "genlab_version", "kind", "model", ...}
    model.safetensors    the trained weights
    ema.safetensors      the exponential moving average of the weights (when training kept one)
    metrics.jsonl        one JSON record per logged step
    samples/             grids written during training
    checkpoint/          everything a resume needs, as one self-contained snapshot
    .lock                locked by the process writing the run (RunLock), holding its pid

Every write goes to a temporary name first and is then renamed into place (``os.replace`` is atomic on
POSIX), so a process killed at any moment leaves the previous good file. The checkpoint is a directory of
several files; it is written whole under a temporary name and swapped in with two renames, and a reader
that finds the swap half done takes the previous snapshot. Nothing here unpickles: weights are safetensors,
everything else is JSON. One process writes a run at a time: the writer holds an exclusive lock on
``.lock`` for as long as it writes, and a second writer is refused before it touches a file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from genlab.errors import GenlabError
from genlab.version import __version__

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
_CHECKPOINT_TMP = ".checkpoint.tmp"
_CHECKPOINT_OLD = ".checkpoint.old"
STATE_FILE = "state.json"
LOCK_FILE = ".lock"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are the user's to share
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_weights(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Save a flat dict of tensors as safetensors, atomically.

    Tensors are detached, moved to CPU and made contiguous; safetensors refuses shared storage, so each
    tensor is cloned when it shares memory with another.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        clean[name] = t
    return atomic_write_bytes(path, safetensors_bytes(clean, metadata=metadata))


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file (never a pickle), with a clear error when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"weights file {path} does not exist; is this a complete genlab run directory?")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise GenlabError(f"weights file {path} is damaged or not a safetensors file ({e})") from None


# ------------------------------------------------------------------------------------------------- lock


class RunLock:
    """An exclusive lock on a run directory, held while this process writes it (``with RunLock(run):``).

    Two trainings given the same ``run_dir`` would otherwise both find the folder free, both write, and
    leave a mixture of two runs; with the lock the second stops with a one-line error before writing.
    The lock is ``flock`` on ``RUN/.lock``: the kernel drops it when the holder exits, however it dies,
    so a killed run never leaves a stale lock. The folder (and its parents) is created if missing.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.run_dir, os.W_OK):
                raise PermissionError(13, "Permission denied")
            fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise GenlabError(
                f"cannot write the run directory {self.run_dir} ({e.strerror or e}); choose another `run_dir`"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise GenlabError(
                f"{self.run_dir} is being written by another process (pid {holder}); wait for it to "
                "finish, or choose another `run_dir`"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ----------------------------------------------------------------------------------------------- config


def write_config(run_dir: str | Path, kind: str, **sections: Any) -> Path:
    """Write ``config.json`` for a run of ``kind``; ``sections`` are JSON-serialisable dicts."""
    config = {"genlab_format": FORMAT_VERSION, "genlab_version": __version__, "kind": kind, **sections}
    return atomic_write_json(Path(run_dir) / CONFIG_FILE, config)


def read_config(run_dir: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read and check a run's ``config.json``.

    Raises GenlabError when the folder is not a run, was written by a newer format, or holds a run of
    another kind than ``kind`` (when given).
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise GenlabError(f"run directory {run_dir} does not exist; train one first (genlab train ...)")
    if not run_dir.is_dir():
        raise GenlabError(f"{run_dir} is a file, not a run directory")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise GenlabError(f"{run_dir} is not a genlab run directory: it has no {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenlabError(f"{path} is not valid JSON ({e}); the run directory is damaged") from None
    if not isinstance(config, dict) or "kind" not in config or "genlab_format" not in config:
        raise GenlabError(f"{path} is not a genlab config (it lacks 'kind' or 'genlab_format')")
    fmt = config["genlab_format"]
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise GenlabError(
            f"{path}: genlab_format must be a whole number such as {FORMAT_VERSION} "
            f"(got {json.dumps(fmt)}); the run directory is damaged"
        )
    if fmt > FORMAT_VERSION:
        raise GenlabError(
            f"{run_dir} was written by genlab format {fmt} (genlab {config.get('genlab_version', '?')}); "
            f"this genlab {__version__} reads format {FORMAT_VERSION}: upgrade genlab"
        )
    _check_sections(config, path)
    if kind is not None and config["kind"] != kind:
        raise GenlabError(
            f"{run_dir} holds a '{config['kind']}' run, not a '{kind}' run; pass a {kind} run directory"
        )
    return config


def _check_sections(config: dict[str, Any], path: Path) -> None:
    """The shape of a config every reader relies on: a string ``kind``, a ``model`` object, every other
    section an object, ``class_names`` a list of strings. What each section holds is checked where it is
    read (genlab.nn.pretrained.config_from_dict)."""
    if not isinstance(config["kind"], str):
        raise GenlabError(f"{path}: 'kind' must be a string such as \"diffusion\", got {config['kind']!r}")
    if "model" not in config:
        raise GenlabError(f"{path} has no 'model' section; the run directory is damaged")
    for key, value in config.items():
        if key in ("genlab_format", "genlab_version", "kind"):
            continue
        if key == "class_names":
            if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
                raise GenlabError(f"{path}: 'class_names' must be a list of strings")
        elif not isinstance(value, dict):
            raise GenlabError(
                f"{path}: '{key}' must be a JSON object of settings, got {json.dumps(value)[:60]}"
            )


# ------------------------------------------------------------------------------------------ checkpoint


def save_checkpoint(
    run_dir: str | Path,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    publish: tuple[str, ...] = ("model", "ema"),
) -> Path:
    """Write a resumable snapshot: ``weights[name]`` -> ``checkpoint/name.safetensors``, ``state`` -> JSON.

    The snapshot is written whole to a temporary folder, then swapped in by renames; afterwards the
    weights named in ``publish`` are copied to the top level of the run (``model.safetensors``...) for
    ``from_pretrained``, each atomically.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp, final, old = run_dir / _CHECKPOINT_TMP, run_dir / CHECKPOINT_DIR, run_dir / _CHECKPOINT_OLD
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, tensors in weights.items():
        save_weights(tmp / f"{name}.safetensors", tensors)
    atomic_write_json(tmp / STATE_FILE, state)
    # A reader that finds no `checkpoint/` but an `.checkpoint.old/` knows a swap was cut short.
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    if old.exists():
        shutil.rmtree(old)
    for name in publish:
        if name in weights:
            _publish(final / f"{name}.safetensors", run_dir / f"{name}.safetensors")
    return final


def _publish(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.publish.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)  # the checkpoint file is never modified in place, so sharing its inode is safe
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def checkpoint_dir(run_dir: str | Path) -> Path | None:
    """The folder of the last complete snapshot, or None when the run has none."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT_DIR, _CHECKPOINT_OLD):
        d = run_dir / name
        if (d / STATE_FILE).is_file():
            return d
    return None


def load_checkpoint(run_dir: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Load the last complete snapshot: (weights by name, state)."""
    d = checkpoint_dir(run_dir)
    if d is None:
        raise GenlabError(f"{run_dir} has no checkpoint to resume from; start a new run without `resume`")
    try:
        state = json.loads((d / STATE_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenlabError(f"{d / STATE_FILE} is damaged ({e})") from None
    if not isinstance(state, dict):
        raise GenlabError(f"{d / STATE_FILE} is damaged (not a JSON object)")
    weights = {p.name[: -len(".safetensors")]: load_weights(p) for p in sorted(d.glob("*.safetensors"))}
    return weights, state


# ----------------------------------------------------------------------------------------------- metrics


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All complete records of ``metrics.jsonl``: JSON objects with a string ``event`` and a whole-number
    ``step``, as ``append_metrics`` writes them. Anything else is skipped, as a line cut short by a kill
    is: every reader (plots, the web app, resume) may then rely on those two keys."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and _is_step(record.get("step")) and isinstance(record.get("event"), str):
            records.append(record)
    return records


def _is_step(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def truncate_metrics(run_dir: str | Path, last_step: int) -> None:
    """Drop records logged after ``last_step`` (work lost by a kill, which a resume will redo)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = [r for r in read_metrics(run_dir) if r["step"] <= last_step]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
