"""Export a trained GAN's generator and encoder as SavedModels that TensorFlow Serving loads.

Each model gets TF Serving's "model base path" layout, `<base>/<name>-generator/<N>/` and
`<base>/<name>-encoder/<N>/`, plus `<base>/models.config` listing every model under
`<base>`. The serving contract is explicit and always float32, whatever precision the
model trained in:

- generator `serving_default`: `z` float32 [None, latent] -> `images` float32
  [None, H, W, 3] in [0, 1];
- encoder `serving_default`: `images` float32 [None, H, W, 3] in [0, 1] -> `embeddings`
  float32 [None, D]; `serve_uint8`: the same with `images` uint8 (what `prepare` writes).

Scaling to the model's [-1, 1] happens inside the SavedModel so a client never needs
project code. Metadata (arch, image size, channels, normalisation, step, ...) travels as
`assets/cytogan.json` and as a `metadata()` tf.function on the loaded object.

TensorFlow is imported inside functions: `read_export_metadata` and the CLI's help stay
light.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import re
from pathlib import Path

from cytogan_tf import __version__
from cytogan_tf.errors import ExportError
from cytogan_tf.io_utils import atomic_directory, atomic_write_text

CHANNELS = ("DNA", "Actin", "Tubulin")
METADATA_ASSET = "cytogan.json"
MODELS_CONFIG = "models.config"
FORMAT_VERSION = 1
# Where the documented docker command mounts the export base directory.
DEFAULT_CONFIG_ROOT = "/models"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# ---------------------------------------------------------------------------------------
# Layout helpers (no TensorFlow)


def model_dirs(name: str, base_dir: str | os.PathLike = "exported") -> dict[str, Path]:
    """The two model base paths an export called `name` writes under `base_dir`."""
    base = Path(base_dir)
    return {"generator": base / f"{name}-generator", "encoder": base / f"{name}-encoder"}


def list_versions(model_dir: str | os.PathLike) -> list[int]:
    """Numeric version sub-directories, as TF Serving sees them (hidden temp dirs skipped)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(name: str, base_dir: str | os.PathLike = "exported") -> int:
    """One more than the highest version of either model, so the pair shares a number."""
    versions = [v for d in model_dirs(name, base_dir).values() for v in list_versions(d)]
    return max(versions, default=0) + 1


def resolve_export_dir(path: str | os.PathLike) -> Path:
    """Accept a version dir (`.../<name>/3`) or a model base dir (then its latest version)."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path}: no such export directory")
    if (path / "saved_model.pb").is_file():
        return path
    versions = list_versions(path)
    if not versions and list_served_models(path):
        models = list_served_models(path)
        raise ExportError(f"{path} is a model root holding {', '.join(models)}; "
                          f"pass one model, e.g. {path / models[0]}")
    if not versions:
        raise ExportError(f"{path}: not a SavedModel (no saved_model.pb) and no numeric version sub-directory")
    latest = path / str(versions[-1])
    if not (latest / "saved_model.pb").is_file():
        raise ExportError(f"{latest}: saved_model.pb is missing")
    return latest


def read_export_metadata(path: str | os.PathLike) -> dict:
    """Read `assets/cytogan.json` of an export with the standard library only."""
    export_dir = resolve_export_dir(path)
    asset = export_dir / "assets" / METADATA_ASSET
    if not asset.is_file():
        raise ExportError(f"{asset}: missing; {export_dir} is not a cytogan export")
    try:
        meta = json.loads(asset.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{asset}: unreadable metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{asset}: metadata is not a JSON object")
    return meta


def require_role(path: str | os.PathLike, role: str) -> tuple[Path, dict]:
    """(version dir, metadata) of an export that must be a `role` model ("encoder" or
    "generator"), with a one-line error naming the right folder otherwise."""
    export_dir = resolve_export_dir(path)
    meta = read_export_metadata(export_dir)
    found = meta.get("role")
    if found is not None and found != role:
        models = meta.get("models") or {}
        hint = f"; use {export_dir.parent.parent / models[role]}" if role in models else ""
        article = "an" if role == "encoder" else "a"
        found = f"an {found}" if found[0] in "aeiou" else f"a {found}"
        raise ExportError(f"{export_dir}: is {found} export, not {article} {role} export{hint}")
    return export_dir, meta


# ---------------------------------------------------------------------------------------
# models.config (TF Serving's ModelServerConfig text proto)


def list_served_models(base_dir: str | os.PathLike) -> list[str]:
    """Model base paths under `base_dir` that hold at least one numeric version."""
    base = Path(base_dir)
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir()
        if p.is_dir() and not p.name.startswith(".") and list_versions(p)
    )


def render_models_config(names, config_root: str = DEFAULT_CONFIG_ROOT) -> str:
    """Text proto `model_config_list { config { name base_path model_platform } ... }`.

    `base_path` is `<config_root>/<name>`: with the default "/models" the file works as is
    inside the tensorflow/serving container when the export base dir is mounted there.
    """
    root = config_root.rstrip("/") or "/"
    lines = ["# Written by `cytogan export`; TF Serving --model_config_file.", "model_config_list {"]
    for name in names:
        base_path = f"{root}/{name}" if root != "/" else f"/{name}"
        lines += [
            "  config {",
            f'    name: "{name}"',
            f'    base_path: "{base_path}"',
            '    model_platform: "tensorflow"',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_models_config(base_dir: str | os.PathLike = "exported",
                        config_root: str = DEFAULT_CONFIG_ROOT) -> Path:
    """(Re)write `<base>/models.config` atomically, listing every model under `base`."""
    out = Path(base_dir) / MODELS_CONFIG
    atomic_write_text(out, render_models_config(list_served_models(base_dir), config_root))
    return out


# ---------------------------------------------------------------------------------------
# Serving modules (TensorFlow)


def _check_shape(tensor, expected, what):
    """Assert the runtime shape so a wrong request fails with a message, not in a conv.

    `expected` has None for free dimensions. The rank is checked too: the signature's
    static shape is not enforced by every caller (tf.saved_model.load's signatures and
    TF Serving's C++ session both feed whatever arrives).
    """
    import tensorflow as tf

    shape = tf.shape(tensor)
    rank_ok = tf.equal(tf.size(shape), len(expected))
    # Pad so a wrong rank still compares element-wise instead of failing to broadcast.
    padded = tf.concat([shape, tf.zeros([len(expected)], tf.int32)], axis=0)[: len(expected)]
    checks = [rank_ok] + [tf.equal(padded[i], d) for i, d in enumerate(expected) if d is not None]
    shown = ", ".join("None" if d is None else str(d) for d in expected)
    assertion = tf.debugging.Assert(
        tf.reduce_all(tf.stack(checks)),
        [f"expected {what} of shape [{shown}], got", shape],
        summarize=len(expected) + 4,
    )
    with tf.control_dependencies([assertion]):
        return tf.identity(tensor)


def _check_values(tensor, what, low=None, high=None):
    """Refuse non-finite values (and values outside [low, high]) with a message: 0..255
    pixels sent to a [0, 1] signature would otherwise give embeddings ~100x too large."""
    import tensorflow as tf

    ok = tf.reduce_all(tf.math.is_finite(tensor))
    bounds = "finite values"
    if low is not None:
        ok = tf.logical_and(ok, tf.reduce_all((tensor >= low) & (tensor <= high)))
        bounds = f"values in [{low:g}, {high:g}]"
    assertion = tf.debugging.Assert(
        ok, [f"expected {what} with {bounds}, got min", tf.reduce_min(tensor), "max", tf.reduce_max(tensor)])
    with tf.control_dependencies([assertion]):
        return tf.identity(tensor)


def _output_dims(model, input_tail) -> list[int]:
    """A model's output shape without the batch axis (from a one-example probe)."""
    import tensorflow as tf

    out = model(tf.zeros([1, *input_tail], tf.float32), training=False)
    return [int(d) for d in out.shape[1:]]


def _unless_empty(batch, fn, empty_shape):
    """fn(batch), or an empty result for a batch of 0: under oneDNN a convolution over an
    empty batch fails ("input depth must be evenly divisible by filter depth")."""
    import tensorflow as tf

    return tf.cond(tf.shape(batch)[0] > 0, lambda: fn(batch),
                   lambda: tf.zeros([0, *empty_shape], tf.float32))


def _serving_root(functions: dict, metadata_json: str):
    """A tf.Module holding the traced functions, the variables they read and metadata.

    The Keras model itself is deliberately not attached: a Keras 3 model tracked as a
    child saves its KerasVariable wrappers, and TF1-style loaders (saved_model_cli run,
    TF Serving) then fail with "Could not find variable". Tracking the variables the
    concrete functions capture is what keras.export.ExportArchive does too.
    """
    import tensorflow as tf

    root = tf.Module(name="cytogan_serving")
    seen, variables = set(), []
    for name, fn in functions.items():
        setattr(root, name, fn)
        for v in fn.get_concrete_function().variables:
            if id(v) not in seen:
                seen.add(id(v))
                variables.append(v)
    root.model_variables = variables
    root.metadata_json = tf.Variable(metadata_json, trainable=False, name="cytogan_metadata")
    root.metadata = tf.function(lambda: tf.identity(root.metadata_json), input_signature=[])
    return root


def _generator_functions(generator, latent_dim: int, image_size: int):
    """`image_size` is the generator's output size (export_models checks it first)."""
    import tensorflow as tf

    def unit_images(z):
        images = tf.cast(generator(z, training=False), tf.float32)
        # tanh output [-1, 1] -> [0, 1]; clip absorbs bf16 rounding past the ends.
        return tf.clip_by_value((images + 1.0) * 0.5, 0.0, 1.0)

    def serve(z):
        z = _check_values(_check_shape(z, [None, latent_dim], "z"), "z")
        return {"images": _unless_empty(z, unit_images, [image_size, image_size, 3])}

    spec = tf.TensorSpec([None, latent_dim], tf.float32, name="z")
    return {"serving_default": tf.function(serve, input_signature=[spec], autograph=False)}


def _encoder_functions(encoder, image_size: int, latent_encoder=None):
    """serving_default / serve_uint8 (embeddings); with `latent_encoder` (BiGAN's E) also
    `encode`: float32 images in [0, 1] -> `z` in the generator's latent space."""
    import tensorflow as tf

    shape = [None, image_size, image_size, 3]
    extra = {}
    if latent_encoder is not None:
        latent = _output_dims(latent_encoder, [image_size, image_size, 3])[-1]

        def encode(images):
            images = _check_values(_check_shape(images, shape, "images"), "images", 0.0, 1.0)
            to_z = lambda x: tf.cast(latent_encoder(x * 2.0 - 1.0, training=False), tf.float32)
            return {"z": _unless_empty(images, to_z, [latent])}

        extra["encode"] = tf.function(
            encode, input_signature=[tf.TensorSpec(shape, tf.float32, name="images")],
            autograph=False)

    dim = _output_dims(encoder, [image_size, image_size, 3])[-1]

    def embed(scaled):
        to_embedding = lambda x: tf.cast(encoder(x, training=False), tf.float32)
        return {"embeddings": _unless_empty(scaled, to_embedding, [dim])}

    def serve_float(images):
        images = _check_values(_check_shape(images, shape, "images"), "images", 0.0, 1.0)
        return embed(images * 2.0 - 1.0)

    def serve_uint8(images):
        images = _check_shape(images, shape, "images")
        return embed(tf.cast(images, tf.float32) / 127.5 - 1.0)

    return {
        "serving_default": tf.function(
            serve_float, input_signature=[tf.TensorSpec(shape, tf.float32, name="images")],
            autograph=False),
        "serve_uint8": tf.function(
            serve_uint8, input_signature=[tf.TensorSpec(shape, tf.uint8, name="images")],
            autograph=False),
        **extra,
    }


def _output_shape(fn, key):
    return fn.get_concrete_function().structured_outputs[key].shape.as_list()


def describe_signatures(path: str | os.PathLike) -> dict:
    """{signature: {"inputs": {name: {dtype, shape}}, "outputs": {...}}} from saved_model.pb.

    Parses the protobuf only (no graph load), so it is quick and works on any SavedModel.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    export_dir = resolve_export_dir(path)
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
        raise ExportError(f"{export_dir / 'saved_model.pb'}: unreadable SavedModel ({exc})") from None
    if not proto.meta_graphs:
        raise ExportError(f"{export_dir / 'saved_model.pb'}: no meta graph")

    def tensors(mapping):
        out = {}
        for key, info in sorted(mapping.items()):
            dims = None if info.tensor_shape.unknown_rank else [
                None if d.size < 0 else d.size for d in info.tensor_shape.dim]
            out[key] = {"dtype": tf.dtypes.as_dtype(info.dtype).name,
                        "shape": dims}
        return out

    sigs = proto.meta_graphs[0].signature_def
    return {
        name: {"inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs)}
        for name, sig in sorted(sigs.items())
        if not name.startswith("__")  # __saved_model_init_op is bookkeeping, not a signature
    }


def _save(functions: dict, meta: dict, out_dir: Path) -> None:
    """tf.saved_model.save into `out_dir` (an empty temp dir), then the metadata asset."""
    import tensorflow as tf

    root = _serving_root(functions, json.dumps(meta, sort_keys=True))
    signatures = {name: fn.get_concrete_function() for name, fn in functions.items()}
    tf.saved_model.save(root, str(out_dir), signatures=signatures)
    assets = out_dir / "assets"
    assets.mkdir(exist_ok=True)
    (assets / METADATA_ASSET).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _input_dim(model, index):
    """A dimension of a functional model's input shape, or None for subclassed models."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if not isinstance(shape, tuple) or len(shape) <= abs(index):
        return None
    return shape[index]


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def export_models(generator, encoder, metadata: dict, name: str,
                  base_dir: str | os.PathLike = "exported", version: int | None = None,
                  config_root: str = DEFAULT_CONFIG_ROOT, latent_encoder=None) -> dict:
    """Write the generator and encoder SavedModels of one model and refresh models.config.

    `generator` maps z [B, latent] to images in [-1, 1]; `encoder` maps images in [-1, 1]
    to embeddings. `metadata` should carry arch, image_size, latent_dim, step,
    normalization; image_size and latent_dim are read from the models when missing.
    `latent_encoder` (images -> z, BiGAN) adds the encoder's `encode` signature.
    Returns {"generator": Path, "encoder": Path, "models_config": Path, "version": int,
    "metadata": dict}. Never overwrites an existing version.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ExportError(f"export name {name!r}: use letters, digits, '.', '_' or '-'")
    dirs = model_dirs(name, base_dir)
    if version is None:
        version = next_version(name, base_dir)
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"--version {version!r}: must be a positive integer")
    targets = {role: d / str(version) for role, d in dirs.items()}
    for target in targets.values():
        if target.exists():
            raise ExportError(f"{target} already exists; exports never overwrite a version "
                              f"(next free version: {next_version(name, base_dir)})")

    meta = _jsonable(dict(metadata))
    latent_dim = meta.get("latent_dim") or _input_dim(generator, -1)
    image_size = meta.get("image_size") or _input_dim(encoder, 1)
    if not latent_dim:
        raise ExportError("metadata 'latent_dim' missing and the generator's input shape is unknown")
    if not image_size:
        raise ExportError("metadata 'image_size' missing and the encoder's input shape is unknown")
    latent_dim, image_size = int(latent_dim), int(image_size)

    gen_shape = [None, *_output_dims(generator, [latent_dim])]
    if gen_shape[1:] != [image_size, image_size, 3]:
        raise ExportError(f"generator outputs images of shape {gen_shape}, "
                          f"expected [None, {image_size}, {image_size}, 3] (metadata image_size)")
    gen_fns = _generator_functions(generator, latent_dim, image_size)
    enc_fns = _encoder_functions(encoder, image_size, latent_encoder)
    emb_shape = _output_shape(enc_fns["serving_default"], "embeddings")
    if len(emb_shape) != 2:
        raise ExportError(f"encoder outputs shape {emb_shape}, expected [None, D] embeddings")

    import keras
    import tensorflow as tf

    meta.update(
        format_version=FORMAT_VERSION,
        name=name,
        version=version,
        image_size=image_size,
        latent_dim=latent_dim,
        encoder_dim=emb_shape[1],
        channels=list(meta.get("channels") or CHANNELS),
        export_time=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        cytogan_version=__version__,
        tensorflow_version=tf.__version__,
        keras_version=keras.__version__,
        models={role: d.name for role, d in dirs.items()},
    )
    if latent_encoder is not None:
        meta["signatures"] = ["serving_default", "serve_uint8", "encode"]
    meta.setdefault("input_range", "float32 [0, 1] (serving_default) or uint8 [0, 255] (serve_uint8)")

    # Both models are written to hidden temp dirs and renamed only if both saves succeed.
    try:
        with atomic_directory(targets["generator"]) as gen_tmp, \
                atomic_directory(targets["encoder"]) as enc_tmp:
            _save(gen_fns, dict(meta, role="generator"), gen_tmp)
            _save(enc_fns, dict(meta, role="encoder"), enc_tmp)
    except FileExistsError as exc:  # another export took this version meanwhile
        raise ExportError(f"{exc.args[0] if exc.args else targets['generator']} already exists; "
                          "exports never overwrite a version") from None
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        raise ExportError(f"{exc.filename2 or exc.filename} already exists; "
                          "exports never overwrite a version") from None
    config = write_models_config(base_dir, config_root)
    return {"generator": targets["generator"], "encoder": targets["encoder"],
            "models_config": config, "version": version, "metadata": meta}


def export_run(run_dir: str | os.PathLike, name: str, base_dir: str | os.PathLike = "exported",
               version: int | None = None, config_root: str = DEFAULT_CONFIG_ROOT,
               readout: str | None = None, views: str | None = None) -> dict:
    """Restore a training run's latest checkpoint (float32) and export it; `readout` and
    `views` export another encoder readout or view averaging than the run's config names."""
    from cytogan_tf.training import load_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run directory")
    loaded = load_run(run_dir, readout=readout, views=views)
    gan = loaded.gan
    info = loaded.dataset_info or {}
    model_cfg = (loaded.config or {}).get("model", {})
    train_cfg = (loaded.config or {}).get("train", {})
    metadata = {
        "arch": getattr(gan, "arch", model_cfg.get("arch")),
        "image_size": int(getattr(gan, "image_size", model_cfg.get("image_size"))),
        "latent_dim": int(getattr(gan, "latent_dim", model_cfg.get("latent_dim"))),
        "step": int(loaded.step),
        "channels": list(info.get("channels") or CHANNELS),
        "normalization": info.get("normalization"),
        "crop_size": info.get("crop_size"),
        "training_precision": (getattr(loaded, "run_info", None) or {}).get("precision")
        or train_cfg.get("precision"),
        "run_dir": str(run_dir.resolve()),
        # load_run wrote the readout and views overrides into the config it returns
        "readout": model_cfg.get("readout", "hidden"),
        "views": model_cfg.get("views", "single"),
    }
    return export_models(gan.generator, gan.encoder, metadata, name, base_dir, version, config_root,
                         latent_encoder=getattr(gan, "latent_encoder", None))
