"""CLIP's text transformer, the text encoder of Stable Diffusion 1.x and 2.x, driven by its ``config.json``.

CLIP's text tower (Radford et al. 2021, section 2.4; GPT-2's layout): token embeddings plus learned position
embeddings, pre-norm residual blocks x + attn(ln1(x)), x + mlp(ln2(x)) with causal (masked) self-attention,
and a final LayerNorm. Latent diffusion (Rombach et al. 2022, section 4.3.2) conditions its U-Net on the
77 final token states: SD 1.x reads them from OpenAI's CLIP ViT-L/14 (12 layers of 768, QuickGELU), SD 2.x
from OpenCLIP ViT-H/14 (1024 wide, 23 of its 24 layers kept, exact GELU).

As in CLIP, padding is not masked: the causal mask alone keeps every token from seeing what follows it, so
the states of the prompt do not depend on the padding after it.

Module attribute names are transformers' ``CLIPTextModel`` state-dict keys as Stable Diffusion folders hold
them (``text_model.embeddings.token_embedding.weight``,
``text_model.encoder.layers.0.self_attn.q_proj.weight``..., ``text_model.final_layer_norm.weight``), so
``text_encoder/model.safetensors`` loads with ``load_state_dict(strict=True)``. Two other layouts load
too (``checkpoint_state``): transformers 5 writes the keys without ``text_model.``, and transformers
before 4.31 also wrote the ``position_ids`` buffer, which is dropped (it is 0..76 by definition, and some
merged checkpoints hold it damaged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import MAX_DEPTH, MAX_TOKENS, MAX_VOCAB, MAX_WIDTH, check_range
from genlab.errors import GenlabError
from genlab.nn.pretrained import PretrainedMixin

ACTIVATIONS = ("quick_gelu", "gelu")
PREFIX = "text_model."
POSITION_IDS = "embeddings.position_ids"

# Keys of transformers' config.json read here; any other key (architectures, model_type, projection_dim,
# dropout, attention_dropout, initializer_range, initializer_factor, bos_token_id, pad_token_id,
# torch_dtype / dtype, transformers_version, _name_or_path, and the generation defaults older versions
# wrote into every config) does not change the states of an encoder run for inference.
FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "max_position_embeddings": "max_position_embeddings",
    "hidden_act": "hidden_act",
    "layer_norm_eps": "layer_norm_eps",
    "eos_token_id": "eos_token_id",
}


@dataclass
class CLIPTextConfig:
    """The shape of a CLIP text transformer; the defaults are transformers' (CLIP ViT-B/32's text tower).

    ``eos_token_id`` only chooses where ``pool`` reads: configs written before transformers 4.31 say 2,
    which means "the position of the largest id" (the end token has the largest id of CLIP's vocabulary).
    """

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407

    def __post_init__(self) -> None:
        check_range("vocab_size", self.vocab_size, 1, MAX_VOCAB)
        check_range("hidden_size", self.hidden_size, 1, MAX_WIDTH)
        check_range("intermediate_size", self.intermediate_size, 1, MAX_WIDTH)
        check_range("num_hidden_layers", self.num_hidden_layers, 1, MAX_DEPTH)
        check_range("num_attention_heads", self.num_attention_heads, 1, self.hidden_size)
        check_range("max_position_embeddings", self.max_position_embeddings, 1, MAX_TOKENS)
        check_range("layer_norm_eps", self.layer_norm_eps, 1e-12, 1.0)
        check_range("eos_token_id", self.eos_token_id, 0, MAX_VOCAB)
        if self.hidden_size % self.num_attention_heads:
            raise GenlabError(
                f"`hidden_size` {self.hidden_size} is not a multiple of `num_attention_heads` "
                f"{self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise GenlabError(
                f"`hidden_act` is {self.hidden_act!r}, which genlab does not know; it runs "
                f"{' and '.join(repr(a) for a in ACTIVATIONS)}"
            )

    @classmethod
    def from_transformers(cls, data: Any, source: str = "the text encoder's config.json") -> CLIPTextConfig:
        """The config of a transformers ``CLIPTextModel`` (its ``config.json`` as a dict); keys that do not
        change the math are ignored (see ``FIELDS``), missing ones take transformers' defaults."""
        if not isinstance(data, dict):
            raise GenlabError(f"{source} must be a JSON object of settings")
        model_type = data.get("model_type", "clip_text_model")
        if model_type != "clip_text_model":
            raise GenlabError(
                f"{source}: `model_type` is {model_type!r}; genlab reads CLIP text models ('clip_text_model')"
            )
        values = {field: data[key] for key, field in FIELDS.items() if key in data and data[key] is not None}
        eos = values.get("eos_token_id")
        if isinstance(eos, list):  # transformers allows several; the first is the one pooling uses
            values["eos_token_id"] = eos[0] if eos else cls.eos_token_id
        for field, value in values.items():
            want = str if field == "hidden_act" else float if field == "layer_norm_eps" else int
            ok = isinstance(value, want) or (want is float and isinstance(value, int))
            if not ok or isinstance(value, bool):
                raise GenlabError(f"{source}: `{field}` must be {want.__name__}, got {value!r:.40}")
        if "layer_norm_eps" in values:
            values["layer_norm_eps"] = float(values["layer_norm_eps"])
        try:
            return cls(**values)
        except GenlabError as e:
            raise GenlabError(f"{source}: {e}") from None


class CLIPTextEmbeddings(nn.Module):
    """Token embedding plus a learned embedding of the position (CLIP has no sinusoids)."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        # 0..max_position_embeddings-1, not saved (as in transformers since 4.31).
        positions = torch.arange(config.max_position_embeddings)[None]
        self.register_buffer("position_ids", positions, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, : input_ids.shape[-1]]
        return self.token_embedding(input_ids) + self.position_embedding(positions)


class CLIPAttention(nn.Module):
    """Multi-head causal self-attention: softmax(Q K^T / sqrt(d) + mask) V (Vaswani et al. 2017, eq. 1),
    each token attending to itself and the tokens before it."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        width = config.hidden_size
        self.heads = config.num_attention_heads
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (N, L, D) -> (N, heads, L, D / heads)
            return t.view(n, length, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the sigmoid approximation of GELU (Hendrycks & Gimpel 2016, section 2) that
    OpenAI's CLIP was trained with, so SD 1.x's encoder must use it too."""
    return x * torch.sigmoid(1.702 * x)


class CLIPMLP(nn.Module):
    """fc1, GELU (quick or exact, as the checkpoint was trained), fc2."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.activation = quick_gelu if config.hidden_act == "quick_gelu" else F.gelu
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """The pre-norm residual block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.self_attn = CLIPAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers))


class CLIPTextStack(nn.Module):
    """Embeddings, the blocks and the final LayerNorm: what transformers calls ``text_model``."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class CLIPTextTransformer(PretrainedMixin, nn.Module):
    """Token ids (N, L) -> token states (N, L, hidden_size), as Stable Diffusion conditions on them.

    ``forward(input_ids)`` is transformers' ``last_hidden_state``: the last block's output after the final
    LayerNorm. ``clip_skip=k`` stops k blocks early and applies the final LayerNorm to that, as diffusers'
    pipelines do with ``clip_skip``. ``pool`` reads the state at the end token (CLIP's text embedding
    before its projection).
    """

    kind = "sd_text_encoder"
    config_class = CLIPTextConfig

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.text_model = CLIPTextStack(config)
        self.register_load_state_dict_pre_hook(_accept_checkpoint_layouts)

    def forward(self, input_ids: torch.Tensor, clip_skip: int = 0) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise GenlabError(f"`input_ids` must be (batch, tokens), got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise GenlabError(
                f"{input_ids.shape[1]} tokens are more than the text encoder's "
                f"{self.config.max_position_embeddings} positions"
            )
        layers = self.text_model.encoder.layers
        check_range("clip_skip", clip_skip, 0, len(layers) - 1)
        x = self.text_model.embeddings(input_ids)
        for layer in layers[: len(layers) - clip_skip]:
            x = layer(x)
        return self.text_model.final_layer_norm(x)

    def pool(self, states: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """(N, hidden_size): each prompt's state at its end token, found as transformers finds it: the first
        ``eos_token_id``, or the largest id when the config says 2 (written before transformers 4.31)."""
        if self.config.eos_token_id == 2:
            where = input_ids.argmax(dim=-1)
        else:
            where = (input_ids == self.config.eos_token_id).int().argmax(dim=-1)
        return states[torch.arange(states.shape[0], device=states.device), where]


def checkpoint_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIP text model's weights in this module's names: keys without ``text_model.`` (transformers 5
    writes them so) get it, and a saved ``position_ids`` buffer (transformers before 4.31) is dropped."""
    if state and not any(k.startswith(PREFIX) for k in state):
        state = {PREFIX + k: v for k, v in state.items()}
    return {k: v for k, v in state.items() if k != PREFIX + POSITION_IDS}


def _accept_checkpoint_layouts(
    module: nn.Module, state: dict[str, torch.Tensor], prefix: str, *args: Any
) -> None:
    """``load_state_dict`` pre-hook: rewrite ``state`` in place as ``checkpoint_state`` does."""
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not own:
        return
    for key in own:
        del state[prefix + key]
    state.update({prefix + k: v for k, v in checkpoint_state(own).items()})
