"""Dask scale-out (--scheduler): same bytes as in-process, clear errors, no orphans."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from cytogan_tf.data.prepare import PrepareOptions, prepare, prepare_section  # noqa: E402
from cytogan_tf.errors import DataError  # noqa: E402

from test_workers import assert_sigkill_leaves_no_descendant  # noqa: E402


def _bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}


def _options(**kw):
    return PrepareOptions.from_config(prepare_section(None, "bbbc021"), crop_size=32,
                                      shards_count=3, progress=False, **kw)


@pytest.fixture(scope="module")
def in_process(small_plates, tmp_path_factory):
    out = tmp_path_factory.mktemp("inproc") / "shards"
    prepare(small_plates, out, options=_options())
    return out


def test_local_cluster_prepare_and_profile_match_the_in_process_bytes(small_plates, in_process, tmp_path):
    from cytogan_tf.profiling import profile_shards

    out = tmp_path / "dask"
    prepare(small_plates, out, options=_options(scheduler="local", workers=2))
    assert _bytes(out) == _bytes(in_process)

    tables = {}
    for name, scheduler in (("inproc", None), ("dask", "local")):
        profile_shards(in_process, tmp_path / f"prof-{name}", features="handcrafted",
                       normalize="dmso", workers=2, progress=False, scheduler=scheduler)
        tables[name] = {k: v for k, v in _bytes(tmp_path / f"prof-{name}").items()
                        if k.endswith((".parquet", ".csv"))}
    assert tables["dask"] and tables["dask"] == tables["inproc"]


def test_a_rerun_on_the_cluster_skips_finished_parts(small_plates, in_process, tmp_path):
    out = tmp_path / "resume"
    # Parts from an in-process run that stopped before merging...
    prepare(small_plates, out, options=_options(), shard=(0, 3))
    done = sorted(p.name for p in (out / ".parts").glob("part-*.tfrecord"))
    assert done == ["part-00000.tfrecord"]
    before = (out / ".parts" / done[0]).stat().st_mtime_ns
    # ...are kept by a cluster run, which makes the rest and merges.
    prepare(small_plates, out, options=_options(scheduler="local", workers=1))
    assert _bytes(out) == _bytes(in_process)
    assert not (out / ".parts").exists() and before  # merged; parts dir removed


def test_missing_dask_or_unreachable_scheduler_is_one_clear_error(monkeypatch, small_plates, tmp_path):
    import importlib.util

    from cytogan_tf import cluster

    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(DataError, match="cannot connect"):
            with cluster.dask_client("tcp://127.0.0.1:9", 1):
                pass
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "distributed" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install 'cytogan-tf\[dask\]'"):
        prepare(small_plates, tmp_path / "x", options=_options(scheduler="local"))


SCRIPT = textwrap.dedent("""
    import sys, time
    from cytogan_tf.cluster import dask_client, map_in_order
    with dask_client("local", 2, quiet=True) as client:
        results = map_in_order(client, time.sleep, [60, 60], key="sleep")
        time.sleep(3)  # both workers are busy now
        print("READY", flush=True)
        next(results)
""")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_sigkill_of_the_client_leaves_no_dask_process_alive(tmp_path):
    # the two worker processes (the nannies run in the client)
    assert_sigkill_leaves_no_descendant([sys.executable, "-c", SCRIPT], min_children=2,
                                        timeout=20, cwd=tmp_path)
