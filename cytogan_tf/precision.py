"""Choosing the Keras dtype policy per device.

Measured on this project's CPU (docs/DESIGN): mixed_bfloat16 is the fastest policy on a
CPU with native bf16, mixed_float16 is many times slower on CPU (no fast fp16 kernels)
but the right choice on a GPU, and plain float32 is the safe fallback. "auto" encodes
exactly that choice.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

POLICIES = ("auto", "float32", "mixed_bfloat16", "mixed_float16")

# CPU flags meaning the CPU computes bfloat16 natively (oneDNN then uses it).
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def gpu_available() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when /proc/cpuinfo lists a native bf16 flag (False where it is unreadable)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return any(f in flags for f in _BF16_FLAGS)
    return False


def resolve_policy(name: str = "auto") -> str:
    """Map a policy name (or "auto") to a concrete Keras policy name."""
    if name not in POLICIES:
        raise ConfigError(f"train.precision: unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    if name != "auto":
        return name
    if gpu_available():
        return "mixed_float16"
    if cpu_has_bf16():
        return "mixed_bfloat16"
    return "float32"


def set_policy(name: str = "auto") -> str:
    """Resolve `name` and make it Keras' global policy; models built afterwards use it."""
    import keras

    resolved = resolve_policy(name)
    keras.config.set_dtype_policy(resolved)
    return resolved


def current_policy() -> str:
    import keras

    return keras.config.dtype_policy().name
