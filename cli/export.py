"""`cytogan export` (run -> TF Serving SavedModels) and `cytogan info` (what an export holds)."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--name", required=True,
              help="Model name: writes <base>/<NAME>-generator/<N>/ and <base>/<NAME>-encoder/<N>/.")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Version number N (default: one more than the latest; never overwrites).")
@click.option("--base-dir", default="exported", show_default=True, type=click.Path(file_okay=False),
              help="TF Serving model root; models.config is rewritten here.")
@click.option("--config-root", default="/models", show_default=True,
              help="Directory the server sees <base-dir> as; models.config base_path = ROOT/<model>.")
@click.option("--readout", type=click.Choice(["hidden", "multiscale", "texture"]), default=None,
              help="Encoder readout to export (default: the run's model.readout). hidden: the "
                   "paper's dense layer; multiscale: average+max pooled features of every stage; "
                   "texture: correlations and spreads of the first stage's channels.")
@click.option("--views", type=click.Choice(["single", "dihedral"]), default=None,
              help="Encoder view averaging (default: the run's model.views). dihedral: the mean "
                   "embedding over the crop's 8 flips and right-angle rotations; single: the "
                   "crop as it is.")
def export(run_dir, name, version, base_dir, config_root, readout, views):
    """Export RUN_DIR's generator and encoder as float32 SavedModels for TensorFlow Serving."""
    from cytogan_tf.export import export_run

    result = export_run(run_dir, name, base_dir=base_dir, version=version, config_root=config_root,
                        readout=readout, views=views)
    meta = result["metadata"]
    click.echo(f"exported {meta.get('arch')} step {meta.get('step')} as version {result['version']}:")
    click.echo(f"  generator      {result['generator']}")
    click.echo(f"  encoder        {result['encoder']}")
    click.echo(f"  models.config  {result['models_config']}")


def _format_tensor(name, spec):
    shape = "unknown" if spec["shape"] is None else \
        "[" + ", ".join("None" if d is None else str(d) for d in spec["shape"]) + "]"
    return f"{name}: {spec['dtype']} {shape}"


@click.command()
@click.argument("exported_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print metadata and signatures as one JSON object.")
def info(exported_dir, as_json):
    """Show an export's metadata and serving signatures.

    EXPORTED_DIR is a version directory or a model base directory (its latest version).
    """
    from cytogan_tf.export import describe_signatures, read_export_metadata, resolve_export_dir

    path = resolve_export_dir(exported_dir)
    meta = read_export_metadata(path)
    signatures = describe_signatures(path)
    if as_json:
        click.echo(json.dumps({"path": str(path), "metadata": meta, "signatures": signatures},
                              indent=2, sort_keys=True))
        return
    click.echo(f"path: {path}")
    for key in sorted(meta):
        value = meta[key]
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        click.echo(f"{key}: {value}")
    click.echo("signatures:")
    for sig, io in signatures.items():
        click.echo(f"  {sig}")
        for name, spec in io["inputs"].items():
            click.echo(f"    input  {_format_tensor(name, spec)}")
        for name, spec in io["outputs"].items():
            click.echo(f"    output {_format_tensor(name, spec)}")
