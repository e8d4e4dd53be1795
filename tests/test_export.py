"""Export contract: what TF Serving and a client without project code see.

Fresh-process checks are batched into few subprocesses (each costs a TensorFlow start-up).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cytogan_tf.cli.main import cli
from cytogan_tf.errors import ExportError
from cytogan_tf.export import export_models, read_export_metadata

SIZE, LATENT, DIM = 32, 8, 5

CLIENT_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def tiny_models(policy=None, size=SIZE, latent=LATENT, dim=DIM, seed=0):
    """A tanh generator and a conv encoder, functional Keras, built under `policy`."""
    import keras

    keras.utils.set_random_seed(seed)
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    try:
        z = keras.Input((latent,))
        x = keras.layers.Dense(4 * 4 * 8)(z)
        x = keras.layers.Reshape((4, 4, 8))(x)
        x = keras.layers.Conv2DTranspose(3, 4, strides=size // 4, padding="same")(x)
        x = keras.layers.Activation("tanh", dtype="float32")(x)
        generator = keras.Model(z, x)
        i = keras.Input((size, size, 3))
        y = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(i)
        y = keras.layers.Flatten()(y)
        y = keras.layers.Dense(dim, dtype="float32")(y)
        encoder = keras.Model(i, y)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return generator, encoder


def run_client(script: str, *args) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter that imports only tensorflow and numpy."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                          capture_output=True, text=True, env=CLIENT_ENV, timeout=240)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """float32 and mixed_bfloat16 exports plus Keras reference outputs saved as .npy."""
    tmp = tmp_path_factory.mktemp("export")
    base = tmp / "exported"
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, LATENT)).astype(np.float32)
    u8 = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    unit = (u8 / 255.0).astype(np.float32)
    np.save(tmp / "z.npy", z)
    np.save(tmp / "u8.npy", u8)
    np.save(tmp / "unit.npy", unit)
    out = {"tmp": tmp, "base": base}
    for tag, policy in (("toy", None), ("toybf", "mixed_bfloat16")):
        gen, enc = tiny_models(policy)
        meta = {"arch": "toy", "step": 7, "normalization": {"method": "percentile"}}
        out[tag] = export_models(gen, enc, meta, tag, base_dir=base)
        np.save(tmp / f"{tag}_gen.npy", (np.asarray(gen(z, training=False), np.float32) + 1) / 2)
        np.save(tmp / f"{tag}_enc.npy", np.asarray(enc(unit * 2 - 1, training=False), np.float32))
        np.save(tmp / f"{tag}_enc_u8.npy",
                np.asarray(enc(u8.astype(np.float32) / 127.5 - 1, training=False), np.float32))
    return out


CLIENT = """
import json, sys
import numpy as np
import tensorflow as tf
tmp, base = sys.argv[1], sys.argv[2]
z, u8, unit = (np.load(f"{tmp}/{n}.npy") for n in ("z", "u8", "unit"))
report = {}
for tag in ("toy", "toybf"):
    gen = tf.saved_model.load(f"{base}/{tag}-generator/1")
    enc = tf.saved_model.load(f"{base}/{tag}-encoder/1")
    g = gen.signatures["serving_default"]
    e = enc.signatures["serving_default"]
    e8 = enc.signatures["serve_uint8"]
    images = g(z=tf.constant(z))["images"].numpy()
    emb = e(images=tf.constant(unit))["embeddings"].numpy()
    emb8 = e8(images=tf.constant(u8))["embeddings"].numpy()
    report[tag] = {
        "gen_err": float(np.abs(images - np.load(f"{tmp}/{tag}_gen.npy")).max()),
        "enc_err": float(np.abs(emb - np.load(f"{tmp}/{tag}_enc.npy")).max()),
        "enc_u8_err": float(np.abs(emb8 - np.load(f"{tmp}/{tag}_enc_u8.npy")).max()),
        "images": [str(images.dtype), list(images.shape), float(images.min()), float(images.max())],
        "emb": [str(emb.dtype), list(emb.shape)],
        "inputs": {name: [[s.dtype.name, s.shape.as_list()] for s in f.structured_input_signature[1].values()]
                   for name, f in (("gen", g), ("enc", e), ("enc_u8", e8))},
        "meta": json.loads(enc.metadata().numpy().decode()),
    }
report["project_code_imported"] = sorted(m for m in sys.modules if m.startswith("cytogan"))
print("REPORT" + json.dumps(report))
"""


def _report(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT"))
    return json.loads(line[len("REPORT"):])


def test_fresh_process_load_matches_keras_and_bf16_stays_float32(exports):
    rep = _report(run_client(CLIENT, exports["tmp"], exports["base"]))
    assert rep["project_code_imported"] == []
    f32 = rep["toy"]
    assert f32["gen_err"] < 1e-5 and f32["enc_err"] < 1e-5 and f32["enc_u8_err"] < 1e-5
    assert f32["images"][:2] == ["float32", [4, SIZE, SIZE, 3]]
    assert 0.0 <= f32["images"][2] and f32["images"][3] <= 1.0
    assert f32["emb"] == ["float32", [3, DIM]]
    assert f32["meta"]["arch"] == "toy" and f32["meta"]["image_size"] == SIZE
    assert f32["meta"]["role"] == "encoder" and f32["meta"]["step"] == 7
    # A model built under mixed_bfloat16 still speaks float32 (and uint8) at the boundary.
    bf = rep["toybf"]
    assert bf["inputs"] == {"gen": [["float32", [None, LATENT]]],
                            "enc": [["float32", [None, SIZE, SIZE, 3]]],
                            "enc_u8": [["uint8", [None, SIZE, SIZE, 3]]]}
    assert bf["images"][0] == "float32" and bf["emb"][0] == "float32"
    # Same bf16 arithmetic inside and outside the SavedModel: only rounding differences.
    assert bf["gen_err"] < 2e-2 and bf["enc_err"] < 5e-2 and bf["enc_u8_err"] < 5e-2


def test_saved_model_cli_show_and_run(exports, tmp_path):
    exe = shutil.which("saved_model_cli")
    cmd = [exe] if exe else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    gen, enc = exports["toy"]["generator"], exports["toy"]["encoder"]
    # Two processes (each a TensorFlow start-up): `show` on the encoder (both signatures),
    # `run` on the generator (its input key z and output key images; the fresh-process
    # test checks the generator's dtypes and shapes).
    procs = [
        subprocess.Popen(cmd + ["show", "--dir", str(enc), "--all"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=CLIENT_ENV),
        subprocess.Popen(cmd + ["run", "--dir", str(gen), "--tag_set", "serve",
                                "--signature_def", "serving_default",
                                "--inputs", f"z={exports['tmp'] / 'z.npy'}", "--outdir", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLIENT_ENV),
    ]
    (enc_out, enc_err), (run_out, run_err) = (p.communicate(timeout=240) for p in procs)
    assert [p.returncode for p in procs] == [0, 0], enc_err[-2000:] + run_err[-2000:]

    for sig, dtype in (("serving_default", "DT_FLOAT"), ("serve_uint8", "DT_UINT8")):
        part = enc_out.split(f"signature_def['{sig}']:")[1].split("signature_def[")[0]
        assert re.search(rf"inputs\['images'\].*?dtype: {dtype}\s+shape: \(-1, {SIZE}, {SIZE}, 3\)", part, re.S)
        assert re.search(rf"outputs\['embeddings'\].*?dtype: DT_FLOAT\s+shape: \(-1, {DIM}\)", part, re.S)
        assert "tensorflow/serving/predict" in part
    assert "images.npy" in run_out + run_err
    images = np.load(tmp_path / "images.npy")
    np.testing.assert_allclose(images, np.load(exports["tmp"] / "toy_gen.npy"), atol=1e-5)


def _config_entries(text):
    return re.findall(r'config\s*\{\s*name:\s*"([^"]+)"\s*base_path:\s*"([^"]+)"\s*'
                      r'model_platform:\s*"([^"]+)"\s*\}', text)


def test_versions_never_overwrite_and_models_config(exports):
    base = exports["base"]
    first = exports["toy"]
    assert first["version"] == 1
    assert first["generator"] == base / "toy-generator" / "1"
    assert (first["encoder"] / "assets" / "cytogan.json").is_file()
    before = (first["generator"] / "saved_model.pb").read_bytes()

    gen, enc = tiny_models(seed=1)
    second = export_models(gen, enc, {"arch": "toy"}, "toy", base_dir=base)
    assert second["version"] == 2 and (base / "toy-encoder" / "2" / "saved_model.pb").is_file()
    with pytest.raises(ExportError, match=r"toy-generator/1 already exists"):
        export_models(gen, enc, {"arch": "toy"}, "toy", base_dir=base, version=1)
    assert (first["generator"] / "saved_model.pb").read_bytes() == before
    assert read_export_metadata(base / "toy-encoder")["version"] == 2  # base dir -> latest

    entries = _config_entries((base / "models.config").read_text())
    assert entries == [(n, f"/models/{n}", "tensorflow")
                       for n in ("toy-encoder", "toy-generator", "toybf-encoder", "toybf-generator")]
    # Another server layout: base_path follows --config-root.
    export_models(gen, enc, {"arch": "toy"}, "toy", base_dir=base, config_root=str(base.resolve()))
    entries = _config_entries((base / "models.config").read_text())
    assert entries[0] == ("toy-encoder", str(base.resolve() / "toy-encoder"), "tensorflow")
    assert sorted(p.name for p in (base / "toy-generator").iterdir()) == ["1", "2", "3"]


def test_info_prints_metadata_and_signatures(exports):
    from click.testing import CliRunner

    runner = CliRunner()
    res = runner.invoke(cli, ["info", str(exports["base"] / "toybf-encoder")])
    assert res.exit_code == 0, res.output
    assert "arch: toy" in res.output and f"image_size: {SIZE}" in res.output
    assert f"input  images: uint8 [None, {SIZE}, {SIZE}, 3]" in res.output
    assert f"input  images: float32 [None, {SIZE}, {SIZE}, 3]" in res.output
    assert f"output embeddings: float32 [None, {DIM}]" in res.output
    assert "serve_uint8" in res.output and "serving_default" in res.output
    res = runner.invoke(cli, ["info", "--json", str(exports["toy"]["generator"])])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["metadata"]["role"] == "generator" and data["metadata"]["latent_dim"] == LATENT
    assert data["signatures"]["serving_default"]["inputs"] == {
        "z": {"dtype": "float32", "shape": [None, LATENT]}}


def test_cli_export_of_a_trained_run(tmp_path):
    """`cytogan export RUN` on a real (2-step) run: metadata from the run, outputs match."""
    import tensorflow as tf
    from click.testing import CliRunner
    from training_helpers import tiny_config, write_tiny_shards

    from cytogan_tf.training import load_run, train

    shards = write_tiny_shards(tmp_path / "shards", n_cells=16)
    run_dir = tmp_path / "run"
    train(tiny_config(batch_size=8), shards, run_dir, steps=1, seed=0, verbose=0,
          precision="float32", sample_every=1000, checkpoint_every=1)
    base = tmp_path / "exported"
    res = CliRunner().invoke(cli, ["export", str(run_dir), "--name", "cells", "--base-dir", str(base)])
    assert res.exit_code == 0, res.output
    assert "version 1" in res.output
    meta = read_export_metadata(base / "cells-encoder")
    assert (meta["arch"], meta["image_size"], meta["step"]) == ("lsgan", 32, 1)
    assert meta["channels"] == ["DNA", "Actin", "Tubulin"]
    assert meta["normalization"]["method"] == "percentile"
    assert meta["encoder_dim"] == 8 and meta["latent_dim"] == 8

    gan = load_run(run_dir).gan
    unit = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    served = tf.saved_model.load(str(base / "cells-encoder" / "1")).signatures["serving_default"]
    np.testing.assert_allclose(served(images=tf.constant(unit))["embeddings"].numpy(),
                               np.asarray(gan.encoder(unit * 2 - 1, training=False)), atol=1e-5)
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "nope"), "--name", "x", "--base-dir", str(base)])
    assert res.exit_code == 1 and "Error:" in res.output and "nope" in res.output


def test_an_export_from_the_repository_root_changes_no_tracked_file():
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0

    assert ignored("exported/models.config") and ignored("exported/cells-encoder/1/saved_model.pb")
    assert not ignored("exported/models.example.config") and not ignored("exported/README.md")
    tracked = subprocess.run(["git", "ls-files", "exported"], cwd=root, capture_output=True,
                             text=True).stdout.split()
    assert sorted(tracked) == ["exported/README.md", "exported/models.example.config"]
