"""The library's errors name parameters; the command line names its options (issue 20)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from genlab.cli import cli
from genlab.errors import GenlabError
from genlab.nn.dit import DiTConfig


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
