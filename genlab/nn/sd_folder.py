"""Reading a Stable Diffusion checkpoint folder the user brings: diffusers' layout, nothing downloaded.

A diffusers-format folder holds ``model_index.json`` and one sub-folder per component: ``unet``,
``text_encoder``, ``vae`` (each a ``config.json`` and ``*.safetensors`` weights, possibly an fp16 variant
or sharded with an index), ``tokenizer`` (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) and
``scheduler`` (``scheduler_config.json``). The Hugging Face cache keeps the same folder as
``models--ORG--NAME/snapshots/REVISION/``; pointing genlab at the ``models--ORG--NAME`` folder (or at the
cache with ``ORG/NAME``) finds the snapshot ``refs/main`` names.

Only safetensors are read: a pickle (``.bin``, ``.ckpt``, ``.pt``) can run code when loaded, so it gets a
one-line error that says how to convert it. Every JSON file is bounded in size before it is parsed, and the
memory the weights need is compared with what the machine has before any is read.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from genlab.errors import GenlabError

COMPONENTS = ("unet", "text_encoder", "tokenizer", "vae", "scheduler")
MAX_JSON_BYTES = 16 * 2**20  # a config or a vocabulary; CLIP's vocab.json is 1.6 MB
WEIGHT_NAMES = ("diffusion_pytorch_model", "model")  # diffusers' modules, transformers' models
PICKLES = (".bin", ".ckpt", ".pt", ".pth")
CONVERT = (
    'convert it once with diffusers: python -c "from diffusers import StableDiffusionPipeline as P; '
    "P.from_pretrained('IN').save_pretrained('OUT', safe_serialization=True)\""
)


def is_sd_folder(path: str | Path) -> bool:
    """Whether ``path`` is (or, in the Hugging Face cache, holds) a diffusers-format checkpoint."""
    try:
        return (find_sd_folder(path) / "model_index.json").is_file()
    except GenlabError:
        return False


def hub_cache() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path("~/.cache/huggingface").expanduser()
    return Path(home).expanduser() / "hub"


def find_sd_folder(path: str | Path) -> Path:
    """The folder with ``model_index.json``: ``path`` itself; the snapshot ``refs/main`` names (else the
    newest) of a Hugging Face cache entry ``models--ORG--NAME``; or, for a name ``ORG/NAME`` that is not a
    folder here, that entry in the local hub cache (as diffusers resolves it offline)."""
    path = Path(path).expanduser()
    if (path / "model_index.json").is_file():
        return path
    repo = path
    parts = Path(str(path)).parts
    if not path.exists() and not path.is_absolute() and len(parts) == 2:
        repo = hub_cache() / f"models--{parts[0]}--{parts[1]}"
    snapshots = repo / "snapshots"
    if snapshots.is_dir():
        ref = repo / "refs" / "main"
        if ref.is_file():
            revision = ref.read_text(encoding="utf-8", errors="replace").strip()
            if (
                revision
                and Path(revision).name == revision
                and (snapshots / revision / "model_index.json").is_file()
            ):
                return snapshots / revision
        found = sorted(
            (p for p in snapshots.iterdir() if (p / "model_index.json").is_file()),
            key=lambda p: p.stat().st_mtime,
        )
        if found:
            return found[-1]
    raise GenlabError(
        f"{path} is not a Stable Diffusion checkpoint: it has no model_index.json (give the folder that "
        "diffusers' save_pretrained wrote, or the models--ORG--NAME folder of the Hugging Face cache)"
    )


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``, bounded in size, or a one-line error naming ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"{path} is missing: the checkpoint has no {what}")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise GenlabError(f"{path} is {path.stat().st_size / 2**20:.0f} MB, too large for a {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenlabError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from None
    if not isinstance(data, dict):
        raise GenlabError(f"{path} must hold a JSON object, the {what}")
    return data


def component(folder: str | Path, name: str) -> Path:
    """The sub-folder of component ``name`` ("unet", "vae"...), or a one-line error when it is missing."""
    path = Path(folder) / name
    if not path.is_dir():
        raise GenlabError(f"{folder} has no {name}/ folder: it is not a complete Stable Diffusion checkpoint")
    return path


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors of one component: a single file (the fp32 one first, else the fp16 variant) or the
    shards its ``*.safetensors.index.json`` lists. A component with only pickles gets a one-line error."""
    folder = Path(folder)
    for stem in WEIGHT_NAMES:
        for variant in ("", ".fp16"):
            single = folder / f"{stem}{variant}.safetensors"
            if single.is_file():
                return [single]
            index = folder / f"{stem}{variant}.safetensors.index.json"
            if index.is_file():
                weight_map = read_json(index, "index of weight shards").get("weight_map")
                if not isinstance(weight_map, dict) or not weight_map:
                    raise GenlabError(f"{index} lacks a weight_map; the checkpoint is damaged")
                shards = sorted({str(v) for v in weight_map.values()})
                if any(Path(s).name != s for s in shards):
                    raise GenlabError(f"{index} names shards outside {folder}; the checkpoint is damaged")
                return [folder / s for s in shards]
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLES) if folder.is_dir() else []
    if pickles:
        raise GenlabError(
            f"{folder} holds PyTorch pickle weights ({pickles[0]}), which genlab does not load because "
            f"unpickling can run code; {CONVERT}"
        )
    raise GenlabError(f"{folder} holds no .safetensors weights")


def weight_bytes(files: list[Path]) -> int:
    """Bytes the weights of ``files`` take once loaded, half-precision floats upcast to float32."""
    return sum(numel * _LOADED_BYTES.get(dtype, 8) for path in files for dtype, numel in _tensor_sizes(path))


def _tensor_sizes(path: Path) -> list[tuple[str, int]]:
    """(safetensors dtype, number of elements) of every tensor in ``path``, read from its header alone."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return [(f.get_slice(k).get_dtype(), math.prod(f.get_slice(k).get_shape())) for k in f.keys()]
    except (SafetensorError, OSError, ValueError) as e:
        raise GenlabError(f"{path} is damaged or not a safetensors file ({e})") from None


# bytes per element once loaded: half-precision floats become float32
_LOADED_BYTES = {"F16": 4, "BF16": 4, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}


def available_memory() -> int | None:
    """Bytes this machine can still give (MemAvailable of /proc/meminfo), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(needed: int, what: str) -> None:
    """A one-line error when ``needed`` bytes exceed what the machine has available."""
    free = available_memory()
    if free is not None and needed > free:
        raise GenlabError(
            f"{what} needs {needed / 2**30:.1f} GiB in float32 but this machine has {free / 2**30:.1f} GiB "
            "available; close other programs, or use a machine with more memory"
        )


def load_weights(files: list[Path], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The tensors of ``files`` as one state dict, floating point ones in ``dtype`` (fp16 upcast)."""
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if not path.is_file():
            raise GenlabError(f"{path} is missing; the checkpoint is incomplete")
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    tensor = f.get_tensor(key)
                    state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        except (SafetensorError, OSError, ValueError) as e:
            raise GenlabError(f"{path} is damaged or not a safetensors file ({e})") from None
    return state
