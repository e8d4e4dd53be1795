"""Every command and option explains itself, and usage errors behave as the README says."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cytogan_tf.cli.main import COMMANDS, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_text(name):
    cmd = cli.get_command(click.Context(cli), name)
    assert cmd.help, f"{name} has no docstring"
    bare = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.help]
    assert not bare, f"{name}: options without help: {bare}"


@pytest.mark.parametrize("args", [["train", "--arch", "gan", "--data", "x", "--out", "y"],
                                  ["demo", "--steps", "0"]])
def test_usage_errors_exit_2_with_an_error_line(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("Error: Invalid value")


def _choices(command: str, option: str) -> set:
    cmd = cli.get_command(click.Context(cli), command)
    (param,) = [p for p in cmd.params if option in p.opts]
    return set(param.type.choices)


def test_cli_choices_match_what_the_library_accepts():
    # The CLI spells these lists out so `cytogan --help` does not import Keras; this keeps
    # the spellings from drifting apart from the library's when one side gains a value.
    from cytogan_tf.latent_cells import METHODS
    from cytogan_tf.models import ARCHS
    from cytogan_tf.models.networks import READOUTS
    from cytogan_tf.models.views import VIEWS
    from cytogan_tf.precision import POLICIES

    assert _choices("export", "--readout") == set(READOUTS)
    assert _choices("export", "--views") == set(VIEWS)
    assert _choices("train", "--arch") == set(ARCHS)
    assert _choices("demo", "--arch") == set(ARCHS)
    assert _choices("encode", "--method") == set(METHODS)
    assert _choices("train", "--precision") == set(POLICIES)
