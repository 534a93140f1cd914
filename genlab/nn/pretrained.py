"""`save_pretrained` / `from_pretrained` for every genlab network, in the manner of diffusers."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from genlab import rundir
from genlab.errors import GenlabError


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type, data: dict[str, Any], source: str = "config") -> Any:
    """Build dataclass ``cls`` from JSON data, turning lists back into tuples and naming unknown keys."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise GenlabError(
            f"{source} has settings this genlab does not know ({', '.join(unknown)}); "
            "it was written by another version of genlab"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hint = hints.get(key)
        nested = hint if dataclasses.is_dataclass(hint) else None
        if nested is None:  # an optional section, e.g. ``DiTConfig | None``
            nested = next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)
        if isinstance(value, list) and "tuple" in str(hint):
            value = tuple(value)
        elif isinstance(value, dict) and nested is not None:  # a nested config section
            value = config_from_dict(nested, value, f"{source} '{key}'")
        kwargs[key] = value
    return cls(**kwargs)


class PretrainedMixin:
    """Mix into an ``nn.Module`` whose ``__init__`` takes one config dataclass stored as ``self.config``."""

    kind: ClassVar[str]
    config_class: ClassVar[type]

    def save_pretrained(self, run_dir: str | Path, ema: nn.Module | None = None, **sections: Any) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (and ``ema.safetensors`` when ``ema`` is given)."""
        assert isinstance(self, nn.Module)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.save_weights(run_dir / rundir.MODEL_FILE, self.state_dict())
        if ema is not None:
            rundir.save_weights(run_dir / rundir.EMA_FILE, ema.state_dict())
        rundir.write_config(run_dir, self.kind, model=config_to_dict(self.config), **sections)  # type: ignore[attr-defined]
        return run_dir

    @classmethod
    def from_pretrained(cls, run_dir: str | Path, use_ema: bool = True, device: str | torch.device = "cpu"):
        """Load a run written by ``save_pretrained`` or by training (its EMA weights when present)."""
        config = rundir.read_config(run_dir, kind=cls.kind)
        model_config = config_from_dict(cls.config_class, config.get("model", {}), f"{run_dir}/config.json")
        model = cls(model_config)
        run_dir = Path(run_dir)
        path = run_dir / rundir.EMA_FILE if use_ema and (run_dir / rundir.EMA_FILE).is_file() else None
        path = path or run_dir / rundir.MODEL_FILE
        load_state(model, rundir.load_weights(path), path)
        return model.to(device).eval()


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict`` with a one-line error when the weights do not fit the architecture."""
    missing, unexpected = [], []
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad))
            if keys
        )
        raise GenlabError(f"weights in {source} do not fit the model in its config.json ({detail})")
    model.load_state_dict(state)
