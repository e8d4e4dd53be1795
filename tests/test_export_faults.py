"""Export faults: bad requests get clear errors, interrupted or refused exports lose nothing."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from click.testing import CliRunner
from test_export import LATENT, SIZE, run_client, tiny_models

from cytogan_tf.cli.main import cli
from cytogan_tf.errors import ExportError
from cytogan_tf.export import (
    describe_signatures,
    export_models,
    list_versions,
    next_version,
    read_export_metadata,
)


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture()
def base(tmp_path, models):
    gen, enc = models
    export_models(gen, enc, {"arch": "toy", "step": 1}, "toy", base_dir=tmp_path / "exported")
    return tmp_path / "exported"


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


BAD_REQUESTS = """
import json, sys
import numpy as np
import tensorflow as tf
base = sys.argv[1]
out = {}

def attempt(fn, **kw):
    try:
        fn(**kw)
        return "accepted"
    except Exception as exc:  # the client sees the error text, not a crash
        return type(exc).__name__ + ": " + " ".join(str(exc).split())

# 1. tf.saved_model.load, as a Python client would.
enc = tf.saved_model.load(f"{base}/toy-encoder/1").signatures
gen = tf.saved_model.load(f"{base}/toy-generator/1").signatures
out["small"] = attempt(enc["serving_default"], images=tf.zeros([1, 16, 16, 3]))
out["rank3"] = attempt(enc["serving_default"], images=tf.zeros([32, 32, 3]))
out["uint8_to_float"] = attempt(enc["serving_default"], images=tf.zeros([1, 32, 32, 3], tf.uint8))
out["float_to_uint8"] = attempt(enc["serve_uint8"], images=tf.zeros([1, 32, 32, 3]))
out["z_width"] = attempt(gen["serving_default"], z=tf.zeros([2, 5]))

# 2. A TF1 session with the signature's placeholder swapped for an unknown-shape one:
#    like TF Serving's C++ session, nothing checks the feed against the static shape.
tf.compat.v1.disable_eager_execution()
for name, key, dtype, shape in (("toy-encoder", "images", tf.float32, [1, 16, 16, 3]),
                                ("toy-encoder", "images", tf.float32, [1, 32, 32, 1]),
                                ("toy-generator", "z", tf.float32, [1, 32, 32, 3])):
    g = tf.Graph()
    with g.as_default():
        ph = tf.compat.v1.placeholder(dtype, shape=None)
    with tf.compat.v1.Session(graph=g) as sess:
        mg = tf.compat.v1.saved_model.loader.load(
            sess, ["serve"], f"{base}/{name}/1", input_map={f"serving_default_{key}:0": ph})
        fetch = list(mg.signature_def["serving_default"].outputs.values())[0].name
        out[f"session_{name}_{shape}"] = attempt(sess.run, fetches=fetch,
                                                 feed_dict={ph: np.zeros(shape)})
print("REPORT" + json.dumps(out))
"""


def test_wrong_shape_and_dtype_requests_fail_clearly(base):
    proc = run_client(BAD_REQUESTS, base)
    assert proc.returncode == 0, proc.stderr[-3000:]  # no abort inside a kernel
    rep = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT"))[6:])
    expect_img = f"expected images of shape [None, {SIZE}, {SIZE}, 3]"
    assert expect_img in rep["small"] and "16 16" in rep["small"]
    assert expect_img in rep["rank3"]
    assert "expected to be a float tensor but is a uint8 tensor" in rep["uint8_to_float"]
    assert "expected to be a uint8 tensor but is a float tensor" in rep["float_to_uint8"]
    assert f"expected z of shape [None, {LATENT}]" in rep["z_width"]
    assert expect_img in rep["session_toy-encoder_[1, 16, 16, 3]"]
    assert expect_img in rep["session_toy-encoder_[1, 32, 32, 1]"]
    assert f"expected z of shape [None, {LATENT}]" in rep["session_toy-generator_[1, 32, 32, 3]"]


def test_interrupted_export_leaves_nothing(base, models, monkeypatch):
    import tensorflow as tf

    config_before = (base / "models.config").read_bytes()
    tree_before = _tree_digest(base)
    real_save = tf.saved_model.save
    calls = []

    def crash_on_second_model(obj, export_dir, **kw):
        calls.append(export_dir)
        real_save(obj, export_dir, **kw)
        if len(calls) == 2:  # the generator is complete, the encoder half-written
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(tf.saved_model, "save", crash_on_second_model)
    gen, enc = models
    with pytest.raises(KeyboardInterrupt):
        export_models(gen, enc, {"arch": "toy"}, "toy", base_dir=base)
    assert len(calls) == 2
    assert _tree_digest(base) == tree_before  # no version 2, no temp dir, same config
    assert (base / "models.config").read_bytes() == config_before
    monkeypatch.setattr(tf.saved_model, "save", real_save)
    assert export_models(gen, enc, {"arch": "toy"}, "toy", base_dir=base)["version"] == 2


def test_leftover_temp_dir_of_a_killed_export_is_ignored(base):
    # What a SIGKILL mid-save leaves: a hidden temp dir next to the versions.
    (base / "toy-encoder" / ".2.abc123.tmp" / "variables").mkdir(parents=True)
    (base / "stray-model" / ".1.x.tmp").mkdir(parents=True)
    assert list_versions(base / "toy-encoder") == [1]
    assert next_version("toy", base) == 2
    assert read_export_metadata(base / "toy-encoder")["version"] == 1


def test_existing_version_is_refused_and_untouched(base, models):
    tree_before = _tree_digest(base)
    gen, enc = models
    with pytest.raises(ExportError, match=r"toy-(generator|encoder)/1 already exists"):
        export_models(gen, enc, {"arch": "toy"}, "toy", base_dir=base, version=1)
    assert _tree_digest(base) == tree_before
    # Only the encoder version exists (e.g. a hand-copied model): still refused.
    shutil.rmtree(base / "toy-generator" / "1")
    with pytest.raises(ExportError, match=r"toy-encoder/1 already exists"):
        export_models(gen, enc, {"arch": "toy"}, "toy", base_dir=base, version=1)
    res = CliRunner().invoke(cli, ["export", str(base), "--name", "toy", "--version", "0"])
    assert res.exit_code != 0 and "--version" in res.output
    assert list_versions(base / "toy-encoder") == [1] and list_versions(base / "toy-generator") == []


@pytest.mark.parametrize("name,version,message", [
    ("a/b", None, "export name"),
    ("", None, "export name"),
    ("ok", 0, "--version 0"),
    ("ok", -3, "--version -3"),
])
def test_bad_name_or_version(tmp_path, models, name, version, message):
    gen, enc = models
    with pytest.raises(ExportError, match=message):
        export_models(gen, enc, {}, name, base_dir=tmp_path, version=version)
    assert not any(tmp_path.iterdir())


def test_metadata_that_contradicts_the_model_is_refused(tmp_path, models):
    gen, enc = models
    with pytest.raises(ExportError, match=r"expected \[None, 64, 64, 3\]"):
        export_models(gen, enc, {"image_size": 64}, "toy", base_dir=tmp_path)
    assert list_versions(tmp_path / "toy-generator") == [] and list_versions(tmp_path / "toy-encoder") == []


def test_unreadable_exports_give_one_line_errors(base, tmp_path):
    runner = CliRunner()
    version = base / "toy-encoder" / "1"
    broken = tmp_path / "broken" / "1"
    shutil.copytree(version, broken)
    (broken / "assets" / "cytogan.json").write_text("{not json")
    with pytest.raises(ExportError, match=r"cytogan.json: unreadable metadata"):
        read_export_metadata(broken)
    (broken / "assets" / "cytogan.json").unlink()
    with pytest.raises(ExportError, match=r"cytogan.json: missing"):
        read_export_metadata(broken.parent)  # base dir -> latest version
    (broken / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(ExportError, match=r"saved_model.pb: unreadable SavedModel"):
        describe_signatures(broken)
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, words in ((tmp_path / "missing", "no such export directory"),
                        (base, "model root holding toy-encoder, toy-generator; pass one model"),
                        (empty, "no numeric version"),
                        (broken, "unreadable SavedModel")):
        if path == broken:
            (broken / "assets").mkdir(exist_ok=True)
            (broken / "assets" / "cytogan.json").write_text("{}")
        res = runner.invoke(cli, ["info", str(path)])
        assert res.exit_code == 1, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0]


def test_export_of_a_run_without_checkpoint_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    res = CliRunner().invoke(cli, ["export", str(run), "--name", "x", "--base-dir", str(tmp_path / "e")])
    assert res.exit_code == 1 and res.output.startswith("Error:") and "run" in res.output
    assert not (tmp_path / "e").exists()


def test_an_export_of_the_wrong_kind_is_named_in_one_line(base, tmp_path):
    # profile/evaluate --encoder given a generator (and evaluate --generator an encoder)
    import numpy as np

    runner = CliRunner()
    shards = tmp_path / "shards"
    from training_helpers import write_tiny_shards
    write_tiny_shards(shards, crop=SIZE)
    res = runner.invoke(cli, ["profile", "--encoder", str(base / "toy-generator"), "--data", str(shards),
                              "--out", str(tmp_path / "p"), "--no-progress"])
    assert res.exit_code == 1, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("Error:") and "is a generator export, not an encoder export" in line
    assert "toy-encoder" in line and len(res.output.strip().splitlines()) == 1
    from cytogan_tf.evaluation import generate_images
    with pytest.raises(ExportError, match="is an encoder export, not a generator export"):
        generate_images(base / "toy-encoder", 2)
    assert np.asarray(generate_images(base / "toy-generator", 2)).shape == (2, SIZE, SIZE, 3)


def test_empty_batches_give_empty_results_and_bad_values_are_refused(base):
    import numpy as np
    import tensorflow as tf

    enc = tf.saved_model.load(str(base / "toy-encoder" / "1")).signatures
    gen = tf.saved_model.load(str(base / "toy-generator" / "1")).signatures
    assert enc["serving_default"](images=tf.zeros((0, SIZE, SIZE, 3)))["embeddings"].shape[0] == 0
    assert enc["serve_uint8"](images=tf.zeros((0, SIZE, SIZE, 3), tf.uint8))["embeddings"].shape[0] == 0
    assert gen["serving_default"](z=tf.zeros((0, LATENT)))["images"].shape == (0, SIZE, SIZE, 3)
    for bad in (255.0, float("nan")):  # 0..255 pixels or NaN sent to the [0, 1] signature
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected images with values in \[0, 1\]"):
            enc["serving_default"](images=tf.constant(np.full((1, SIZE, SIZE, 3), bad, np.float32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected z with finite values"):
        gen["serving_default"](z=tf.constant(np.full((1, LATENT), np.inf, np.float32)))
