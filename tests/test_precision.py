"""Policy resolution per device (device detection mocked) and setting Keras' policy."""

import keras
import pytest

from cytogan_tf import precision
from cytogan_tf.errors import ConfigError


@pytest.mark.parametrize(
    "gpu,bf16,want",
    [(True, True, "mixed_float16"), (True, False, "mixed_float16"),
     (False, True, "mixed_bfloat16"), (False, False, "float32")],
)
def test_auto_picks_by_device(monkeypatch, gpu, bf16, want):
    monkeypatch.setattr(precision, "gpu_available", lambda: gpu)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: bf16)
    assert precision.resolve_policy("auto") == want


@pytest.mark.parametrize("name", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_explicit_names_pass_through(monkeypatch, name):
    monkeypatch.setattr(precision, "gpu_available", lambda: pytest.fail("must not probe"))
    assert precision.resolve_policy(name) == name


def test_unknown_policy_is_config_error():
    with pytest.raises(ConfigError, match="precision.*'half'"):
        precision.resolve_policy("half")


def test_cpuinfo_flags(tmp_path):
    with_bf16 = tmp_path / "a"
    with_bf16.write_text("processor: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    without = tmp_path / "b"
    without.write_text("processor: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert precision.cpu_has_bf16(with_bf16)
    assert not precision.cpu_has_bf16(without)
    assert not precision.cpu_has_bf16(tmp_path / "missing")


def test_set_policy_sets_global_policy(monkeypatch):
    monkeypatch.setattr(precision, "gpu_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    try:
        assert precision.set_policy("auto") == "mixed_bfloat16"
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        assert precision.set_policy("float32") == "float32"
        assert keras.config.dtype_policy().name == "float32"
    finally:
        keras.config.set_dtype_policy("float32")
