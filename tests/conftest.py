"""Fixtures shared by several test modules."""

from __future__ import annotations

import dataclasses

import pytest


@pytest.fixture(scope="session")
def small_plates(tmp_path_factory):
    """The tiny synthetic preset at 96x96 with 5 cells per field: enough nuclei to measure
    their size and crop them at 32 px, written once per test session (read-only)."""
    from cytogan_tf.data.synthetic import load_preset, simulate_plates

    settings = dataclasses.replace(load_preset("tiny"), image_size=(96, 96), cells_per_image=5)
    out = tmp_path_factory.mktemp("synth") / "plates"
    simulate_plates(out, settings, progress=False)
    return out
