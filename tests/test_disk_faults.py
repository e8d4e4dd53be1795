"""A full or read-only output disk: one `Error:` line, and no half-written folders left.

Simulated by raising the OS and TF errors such a disk gives (the suite may run as root,
where permissions do not stop writes)."""

from __future__ import annotations

import errno

import pytest
import tensorflow as tf
from click.testing import CliRunner

from cytogan_tf.errors import DataError
from cytogan_tf.io_utils import atomic_directory
from cytogan_tf.training import train

from training_helpers import tiny_config, write_tiny_shards


def test_failed_directory_write_leaves_no_empty_folders(tmp_path):
    target = tmp_path / "exported" / "cells-encoder" / "1"
    with pytest.raises(OSError):
        with atomic_directory(target) as tmp:
            (tmp / "saved_model.pb").write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_write_failure_names_the_folder_and_cleans_temp(tmp_path, monkeypatch):
    data = write_tiny_shards(tmp_path / "shards")
    run = tmp_path / "run"

    def full_disk(self, checkpoint_number=None, **kw):
        (run / "checkpoints" / f"ckpt-{checkpoint_number}_temp").mkdir(parents=True)
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full_disk)
    with pytest.raises(DataError, match=r"checkpoints: cannot write the step-2 checkpoint "
                                        r"\(No space left on device\); no checkpoint"):
        train(tiny_config(), data, run, steps=2, precision="float32", verbose=0, checkpoint_every=2)
    assert not list((run / "checkpoints").glob("*_temp*"))


def test_cli_reports_a_full_disk_in_one_line(tmp_path, monkeypatch):
    import cytogan_tf.data.synthetic as synthetic
    from cytogan_tf.cli.main import cli

    def no_space(out, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(synthetic, "simulate_plates", no_space)
    result = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "p"), "--preset", "tiny", "--quiet"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {tmp_path / 'p'}: No space left")
