"""Configs, atomic writes and the CLI group: the plumbing every command relies on."""

import json
import os

import pandas as pd
import pytest
from click.testing import CliRunner

from cytogan_tf import config as cfgmod
from cytogan_tf import io_utils
from cytogan_tf.errors import ConfigError


BASE = {"model": {"arch": "wgan", "image_size": 64, "widths": [64, 128]},
        "train": {"batch_size": 64, "g_lr": 2e-4, "resume": False}}


def test_overrides_convert_strings_to_the_configured_type():
    out = cfgmod.apply_overrides(BASE, cfgmod.parse_set_options(
        ["train.batch_size=32", "train.g_lr=1e-4", "train.resume=true", "model.widths=[8, 16]"]))
    assert out["train"] == {"batch_size": 32, "g_lr": 1e-4, "resume": True}
    assert out["model"]["widths"] == [8, 16]
    assert BASE["train"]["batch_size"] == 64, "the input config must not be mutated"


def test_none_override_leaves_value_alone():
    assert cfgmod.apply_overrides(BASE, {"train.batch_size": None}) == BASE


@pytest.mark.parametrize("key", ["train.batchsize", "nosuch.batch_size"])
def test_unknown_key_is_an_error_naming_it(key):
    with pytest.raises(ConfigError, match=key.split(".")[0]):
        cfgmod.apply_overrides(BASE, {key: 1})


def test_bad_value_type_names_the_key():
    with pytest.raises(ConfigError, match="train.batch_size"):
        cfgmod.apply_overrides(BASE, {"train.batch_size": "lots"})


def test_set_option_needs_equals():
    with pytest.raises(ConfigError, match="key=value"):
        cfgmod.parse_set_options(["train.batch_size"])


def test_dump_toml_round_trips(tmp_path):
    nested = {**BASE, "prepare": {"percentiles": [0.1, 99.9], "name": 'a "q"'}}
    path = tmp_path / "c.toml"
    path.write_text(cfgmod.dump_toml(nested))
    assert cfgmod.load_config(path) == nested


def test_unknown_bundled_config_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown config 'nope'"):
        cfgmod.load_config("nope")


def test_invalid_toml_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\narch=")
    with pytest.raises(ConfigError, match="bad.toml"):
        cfgmod.load_config(bad)


def test_every_bundled_config_parses():
    names = cfgmod.available_configs()
    assert names, "configs/ should ship TOML files"
    for name in names:
        assert isinstance(cfgmod.load_config(name), dict)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with io_utils.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_outputs_get_the_umask_mode_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        io_utils.atomic_write_text(tmp_path / "f.txt", "x")
        with io_utils.atomic_directory(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_atomic_directory_refuses_existing(tmp_path):
    (tmp_path / "v1").mkdir()
    with pytest.raises(FileExistsError):
        with io_utils.atomic_directory(tmp_path / "v1"):
            pass
    with io_utils.atomic_directory(tmp_path / "v2") as d:
        (d / "f").write_text("x")
    assert (tmp_path / "v2" / "f").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["v1", "v2"]


def test_write_table_and_json(tmp_path):
    df = pd.DataFrame({"Metadata_Well": ["A01", "B02"], "f_0": [0.5, 1.5]})
    paths = io_utils.write_table(df, tmp_path / "profiles")
    assert [p.name for p in paths] == ["profiles.parquet", "profiles.csv"]
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), df)
    pd.testing.assert_frame_equal(pd.read_csv(paths[1]), df)
    io_utils.atomic_write_json(tmp_path / "m.json", {"n": 3})
    assert json.loads((tmp_path / "m.json").read_text()) == {"n": 3}


def test_cli_help_lists_every_command_and_errors_are_one_line():
    from cytogan_tf.cli.main import COMMANDS, cli

    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert name in result.output
    result = runner.invoke(cli, ["train", "--arch", "wgan", "--data", "/nonexistent/shards",
                                 "--out", "/tmp/cytogan-never-written"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output


def test_a_folder_named_like_a_bundled_config_is_not_taken_for_it(tmp_path, monkeypatch):
    # the README's walk-through keeps its data in ./bbbc021 and names --config bbbc021
    from cytogan_tf.config import load_config
    from cytogan_tf.errors import ConfigError

    for name in ("bbbc021", "lsgan", "demo", "examplefly"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_config("bbbc021")["layout"]["kind"] == "bbbc021"
    assert load_config("lsgan")["model"]["arch"] == "lsgan"
    assert "demo" in load_config("demo")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("missing.toml")
