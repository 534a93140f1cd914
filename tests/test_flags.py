"""The library's errors name parameters; the command line names its options (issue 20)."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from genlab.cli import cli
from genlab.errors import GenlabError
from genlab.nn.dit import DiTConfig

GENLAB = Path(__file__).resolve().parent.parent / "genlab"


def test_library_errors_name_the_parameter():
    with pytest.raises(GenlabError, match="^`patch_size` must be between 1 and 32 \\(got 0\\)$"):
        DiTConfig(image_size=32, in_channels=1, patch_size=0)


@pytest.mark.parametrize(
    "args, said",
    [
        (["--patch-size", "0"], "error: --patch-size must be between 1"),
        (["--dit-width", "0"], "error: --dit-width must be between 1"),  # DiTConfig.width, renamed
    ],
)
def test_the_command_line_names_its_options(tmp_path, args, said):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["train", "diffusion", "--backbone", "dit", "--minutes", "0.01", "--out", str(run), *args]
    )
    assert result.exit_code == 2
    assert said in result.output and "`" not in result.output
    assert not run.exists()


def test_names_a_command_does_not_set_stay_as_they_are():
    from genlab.cli.flags import as_flags

    assert as_flags("`a_b` and `c` and --x", {"a_b": "--a-b"}) == "--a-b and `c` and --x"


# ------------------------------------------------------------- one message, through Python and the CLI


def _vae() -> None:
    from genlab.nn.vae import VAEConfig

    VAEConfig(image_size=12, downsample=8)


def _unet() -> None:
    from genlab.nn.unet import UNetConfig

    UNetConfig(channel_mults=(1, 0))


def _classifier() -> None:
    from genlab.nn.classifier import ClassifierConfig

    ClassifierConfig(dropout=1.0)


def _segmenter() -> None:
    from genlab.nn.seg_unet import SegUNetConfig

    SegUNetConfig(depth=13)


def _clip() -> None:
    from genlab.clip.model import CLIPConfig

    CLIPConfig(embed_dim=0)


def _img2img() -> None:
    from genlab.img2img.task import RestorationConfig

    RestorationConfig(noise=0)


# (the library call, what it says; the command that reaches it, what the command line says)
MESSAGES = [
    pytest.param(
        _vae,
        "the image side 12 is not divisible by `downsample` 8; pick another factor or `image_size`",
        ["train", "vae", "--data", "digits", "--image-size", "12", "--downsample", "8"],
        "error: the image side 12 is not divisible by --downsample 8; pick another factor or --image-size",
        id="vae-downsample",
    ),
    pytest.param(
        _unet,
        "every `channel_mults` entry must be between 1 and 65536 (got 0)",
        ["train", "diffusion", "--data", "digits", "--channel-mults", "1,0"],
        "error: every --channel-mults entry must be between 1 and 65536 (got 0)",
        id="unet-channel-mults",
    ),
    pytest.param(
        _classifier,
        "`dropout` must be in [0, 1) (got 1.0)",
        ["train", "classifier", "--data", "digits", "--dropout", "1"],
        "error: --dropout must be in [0, 1) (got 1.0)",
        id="classifier-dropout",
    ),
    pytest.param(
        _segmenter,
        "`depth` must be between 1 and 12 (got 13)",
        ["train", "segmenter", "--train-images", "1", "--val-images", "1", "--size", "32", "--depth", "13"],
        "error: --depth must be between 1 and 12 (got 13)",
        id="segmenter-depth",
    ),
    pytest.param(
        _clip,
        "`embed_dim` must be between 1 and 65536 (got 0)",
        ["train", "clip", "--data", "digits", "--embed-dim", "0"],
        "error: --embed-dim must be between 1 and 65536 (got 0)",
        id="clip-embed-dim",
    ),
    pytest.param(
        _img2img,
        "`factor` must be 2 or 4 and `noise` positive",
        ["train", "img2img", "--data", "digits", "--noise", "0"],
        "error: --factor must be 2 or 4 and --noise positive",
        id="img2img-noise",
    ),
]


@pytest.mark.parametrize("call, python_says, args, cli_says", MESSAGES)
def test_a_message_names_the_parameter_in_python_and_the_option_on_the_command_line(
    tmp_path, call: Callable[[], None], python_says: str, args: list[str], cli_says: str
):
    with pytest.raises(GenlabError) as info:
        call()
    assert str(info.value) == python_says
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, [*args, "--out", str(run)])
    assert result.exit_code == 2, result.output
    assert cli_says in result.output and "`" not in result.output
    assert not run.exists()


def test_a_precision_the_library_refuses_is_named_as_the_option(tmp_path, monkeypatch):
    """--precision is a choice of the commands, so the library's own check is met only when the two
    disagree: here, a build whose library offers no fp32."""
    from genlab.diffusion.task import DiffusionConfig
    from genlab.nn import precision
    from genlab.nn.unet import UNet, UNetConfig

    with pytest.raises(GenlabError) as info:
        precision.check_precision("fp16")
    assert str(info.value) == "unknown `precision` 'fp16'; choose one of auto, bf16, fp32"

    run = tmp_path / "run"
    unet = UNet(UNetConfig(image_size=8, base_channels=32, channel_mults=(1,), attention_levels=()))
    unet.save_pretrained(run, diffusion=asdict(DiffusionConfig()))
    monkeypatch.setattr(precision, "PRECISIONS", ("auto", "bf16"))
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["sample", str(run), "--precision", "fp32", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "error: unknown --precision 'fp32'; choose one of auto, bf16" in result.output
    assert "`" not in result.output and not out.exists()


def test_an_option_named_apart_from_its_parameter_is_mapped():
    """`genlab train img2img`'s --task option fills the keyword ``task_``; the library's `task` still
    reads as --task."""
    from genlab.cli.flags import as_flags, flag_names
    from genlab.cli.train import train_img2img

    names = flag_names(train_img2img, train_img2img.flags)
    assert (
        as_flags("`task` must be one of superres, denoise", names)
        == "--task must be one of superres, denoise"
    )


# ---------------------------------------------------------------- no CLI option written in the library

CHECKED_CALLS = {"GenlabError", "check_range", "check_fraction"}
FLAG = re.compile(r"(?<![\w-])--[a-z]")  # an option: "--" and a letter, not inside a word (models--ORG--NAME)
PIP_COMMAND = re.compile(r"pip install[^;]*")  # a pip command line keeps its options, up to the next clause


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level string constants (``INSTALL = "pip install ..."``), which f-strings may interpolate."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                found.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return found


def _texts(node: ast.AST, constants: dict[str, str]) -> Iterator[str]:
    """The string literals in ``node``: an f-string as its text, a module constant it interpolates
    written out, any other value as "{}"."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(str(part.value))
            elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name):
                parts.append(constants.get(part.value.id, "{}"))
            else:
                parts.append("{}")
                yield from _texts(part, constants)
        yield "".join(parts)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _texts(child, constants)


def flags_in_messages(source: str) -> list[tuple[int, str]]:
    """(line, text) of every message given to GenlabError, check_range or check_fraction that writes a
    command-line option ("--" and a letter) outside a pip command line."""
    tree = ast.parse(source)
    constants = _module_strings(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name not in CHECKED_CALLS:
            continue
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            for text in _texts(arg, constants):
                if FLAG.search(PIP_COMMAND.sub("", text)):
                    found.append((node.lineno, text))
    return sorted(found)


def test_the_scan_finds_options_in_messages_and_spares_pip_command_lines():
    source = """
INSTALL = "pip install --no-deps x"
check_range("--size", size, 1, 8)
check_fraction("dropout", p)
raise GenlabError(f"{path} lacks {name}; reinstall: {INSTALL} --force-reinstall")
raise errors.GenlabError(f"unknown {param('precision')} {name!r}; try " + "--precision auto")
raise GenlabError(f"`text_encoder` minilm needs the weights: {INSTALL}")
raise GenlabError("no model_index.json: give the models--ORG--NAME folder")
print("--not-a-message")
"""
    assert [line for line, _ in flags_in_messages(source)] == [3, 6]


def test_library_messages_name_parameters_not_options():
    """Library errors name parameters (`patch_size`); only genlab/cli/ knows the options that set them."""
    found = []
    for path in sorted(GENLAB.rglob("*.py")):
        if "cli" in path.relative_to(GENLAB).parts[:1]:
            continue
        for line, text in flags_in_messages(path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(GENLAB.parent)}:{line}: {text!r}")
    assert not found, "library messages that write a command-line option:\n" + "\n".join(found)
