"""The `cytogan` command.

Subcommands are imported lazily so `cytogan --help` answers without loading TensorFlow.
A `CytoganError` anywhere becomes a one-line `Error: ...` and exit status 1.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature lists) is noise for a CLI
# user; warnings from Python and real errors still show. Set TF_CPP_MIN_LOG_LEVEL=0 to see it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click

from cytogan_tf import __version__
from cytogan_tf.errors import CytoganError

# Write failures that are the disk's fault, not the program's: one line, exit 1.
_DISK_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}

# command name -> "module:attribute" (module relative to cytogan_tf.cli)
COMMANDS = {
    "synth": "synth:synth",
    "prepare": "prepare:prepare",
    "train": "train:train",
    "sample": "generate:sample",
    "interpolate": "generate:interpolate",
    "arithmetic": "generate:arithmetic",
    "export": "export:export",
    "info": "export:info",
    "profile": "profile:profile",
    "evaluate": "profile:evaluate",
    "combine": "profile:combine",
    "encode": "latent:encode",
    "reconstruct": "latent:reconstruct",
    "demo": "demo:demo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"cytogan_tf.cli.{module_name}")
        return getattr(module, attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CytoganError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            if exc.errno not in _DISK_ERRNOS:
                raise
            # Outputs are written atomically, so nothing already there was harmed.
            raise click.ClickException(f"{exc.filename or 'output'}: {exc.strerror} (is the "
                                       f"output disk full or read-only?)") from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cytogan")
def cli():
    """GANs on single-cell microscopy: prepare plates, train, export, profile, generate."""


def main(argv=None):
    return cli.main(args=argv, prog_name="cytogan")


if __name__ == "__main__":
    sys.exit(main())
