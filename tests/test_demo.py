"""`cytogan demo` end to end on a tiny plate set: every stage runs and writes its outputs."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

TINY = ["--steps", "3", "--quiet", "--seed", "1",
        "--set", "prepare.crop_size=32", "--set", "model.widths=[16,8,8,4]",
        # 32: the demo's LSGAN (configs/lsgan-set.toml) needs 2 runs of 16 cells per batch
        "--set", "train.batch_size=32", "--set", "train.sample_every=3"]


def test_demo_runs_the_whole_study(tmp_path):
    from cytogan_tf.cli.main import cli
    from cytogan_tf.config import load_config

    arch = load_config("demo")["demo"]["arch"]  # the default the benchmark picked

    out = tmp_path / "demo"
    runner = CliRunner()
    # the demo reuses plates already in OUT/plates: give it small ones
    result = runner.invoke(cli, ["synth", "--out", str(out / "plates"), "--preset", "tiny",
                                 "--image-size", "96x96", "--cells-per-image", "6", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["demo", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output

    text = result.output
    assert "MOA prediction" in text and "handcrafted" in text and "chance" in text
    for name in ("samples.png", "interpolation.png", "reconstruction.png"):
        assert Image.open(out / "figures" / name).size[0] > 32
    # one treatment-arithmetic figure per MOA: 4 DMSO cells x 6 frames
    moas = set(pd.read_parquet(out / "shards" / "cells.parquet")["Metadata_MOA"]) - {"DMSO"}
    strips = sorted((out / "figures").glob("arithmetic_*.png"))
    assert len(strips) == len(moas) and Image.open(strips[0]).size[0] > 6 * 32
    assert (out / "exported" / f"demo-{arch}-generator" / "1" / "saved_model.pb").is_file()
    assert (out / "exported" / "models.config").is_file()
    run = json.loads((out / f"run-{arch}" / "run.json").read_text())
    assert run["step"] == 3
    assert "combined" in text
    for label in ("encoder", "handcrafted", "combined"):
        pdir = out / f"profiles-{label}"
        treatments = pd.read_parquet(pdir / "treatments_mean.parquet")
        assert {"Metadata_Compound", "Metadata_Concentration", "Metadata_MOA"} <= set(treatments.columns)
        metrics = json.loads((pdir / "metrics.json").read_text())
        assert 0.0 <= metrics["nsc"]["accuracy"] <= 1.0
        assert (pdir / "confusion_nsc.png").is_file()
    # the summary names every figure it wrote
    for label in ("encoder", "handcrafted", "combined"):
        for figure in ("confusion_nsc.png", "embedding_pca.png"):
            assert str(out / f"profiles-{label}" / figure) in text

    # a re-run reuses the finished run and its export instead of adding versions
    again = runner.invoke(cli, ["demo", "--out", str(out), *TINY])
    assert again.exit_code == 0, again.output
    assert "already trained to step 3" in again.output and "0 img/s" not in again.output
    assert "reusing version 1" in again.output
    assert not (out / "exported" / f"demo-{arch}-generator" / "2").exists()

    # plates simulated with one seed are not silently reused for another
    preset = load_config("demo")["demo"]["synth_preset"]
    (out / "demo.json").write_text(json.dumps({"seed": 1, "synth_preset": preset}))
    other = runner.invoke(cli, ["demo", "--out", str(out), *TINY[:3], "--seed", "2", *TINY[5:]])
    assert other.exit_code == 1
    assert "made with --seed 1" in other.output and "--seed 2" in other.output


def test_each_arch_trains_the_config_demo_configs_names_with_the_demo_overrides(tmp_path):
    from cytogan_tf.cli.main import cli
    from cytogan_tf.demo import demo_config, model_config
    from cytogan_tf.errors import ConfigError

    demo = demo_config()
    lsgan = model_config(demo)
    # LSGAN: configs/lsgan-set.toml (the set loss on weak treatment labels) at the demo's sizes
    assert lsgan["model"]["weak_objective"] == "set" and lsgan["model"]["weak_labels"] == "treatment"
    assert lsgan["model"]["widths"] == demo["model"]["widths"]
    assert lsgan["train"]["steps"] == demo["train"]["steps"]
    assert lsgan["model"]["image_size"] == demo["prepare"]["crop_size"]
    # an arch [demo.configs] does not name trains its own config (BEGAN has no weak keys)
    began = model_config(demo_config("began"))
    assert began["model"]["arch"] == "began" and "weak_objective" not in began["model"]
    # --set demo.configs.lsgan=lsgan trains the contrastive LSGAN instead
    contrastive = model_config(demo_config(overrides={"demo.configs.lsgan": "lsgan"}))
    assert contrastive["model"]["ssl"] == "contrastive"
    # a config of another arch is refused, naming the key
    with pytest.raises(ConfigError, match="demo.configs.lsgan: config 'wgan' trains 'wgan'"):
        model_config(demo_config(overrides={"demo.configs.lsgan": "wgan"}))
    with pytest.raises(ConfigError, match="demo.configs.lsgan: config 'synth' has no \\[model\\] arch"):
        model_config(demo_config(overrides={"demo.configs.lsgan": "synth"}))  # a data config
    with pytest.raises(ConfigError, match="demo.configs.lsgan: unknown config 'lsgan-sett'"):
        model_config(demo_config(overrides={"demo.configs.lsgan": "lsgan-sett"}))
    # ... by `cytogan demo` before any stage writes anything
    bad = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo"), "--quiet",
                                   "--set", "demo.configs.lsgan=lsgan-sett"])
    assert bad.exit_code == 1 and "demo.configs.lsgan: unknown config" in bad.output
    assert not (tmp_path / "demo").exists()
