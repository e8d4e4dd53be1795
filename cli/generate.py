"""`cytogan sample | interpolate | arithmetic`: images from a trained generator.

RUN_OR_EXPORT is a run directory (restored via `load_run`) or an exported generator
SavedModel (`exported/<name>-generator/<N>`, or its base dir: the newest version is used).
Latents are drawn with numpy from `--seed`s (`cytogan_tf.latent.sample_latent`), so the
same seed gives the same cell from a run and from its export.
"""

from __future__ import annotations

import click


def _open_generator(path):
    """(generate(z) -> float32 [N,H,W,3] in [0,1], latent_dim, latent distribution)."""
    import json
    from pathlib import Path

    import numpy as np

    from cytogan_tf.errors import DataError

    path = Path(path)
    if (path / "run.json").is_file():
        from cytogan_tf.training import generate_unit, load_run

        loaded = load_run(path)
        dist = loaded.config["model"].get("latent_distribution", "normal")
        return (lambda z: generate_unit(loaded.gan, z)), int(loaded.gan.latent_dim), dist
    if not (path / "saved_model.pb").is_file() and path.is_dir():
        versions = sorted((p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()),
                          key=lambda p: int(p.name))
        if versions:
            path = versions[-1]
    if not (path / "saved_model.pb").is_file():
        raise DataError(f"{path}: neither a run directory (run.json) nor an exported generator "
                        f"(saved_model.pb)")
    import tensorflow as tf

    try:
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    except (KeyError, OSError, ValueError, tf.errors.OpError) as exc:
        raise DataError(f"{path}: cannot load the generator's serving_default signature ({exc})") from None
    inputs = fn.structured_input_signature[1]
    if "z" not in inputs:
        raise DataError(f"{path}: serving_default takes {sorted(inputs)}, not z (an encoder export?)")
    latent_dim = int(inputs["z"].shape[-1])
    meta_file = path / "assets" / "cytogan.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}

    def generate(z):
        out = fn(z=tf.constant(np.asarray(z, np.float32)))
        images = out["images"] if "images" in out else next(iter(out.values()))
        return np.clip(images.numpy().astype(np.float32), 0.0, 1.0)

    return generate, latent_dim, meta.get("latent_distribution", "normal")


def _generate_batched(generate, z, batch=64):
    import numpy as np

    return np.concatenate([generate(z[i:i + batch]) for i in range(0, len(z), batch)], axis=0)


def _latents_from(spec: str, latent_dim: int, dist: str, option: str):
    """Comma-separated seeds (one z each) or a .npy file of [D] / [N, D] vectors."""
    from pathlib import Path

    import numpy as np

    from cytogan_tf.errors import ConfigError, DataError
    from cytogan_tf.latent import sample_latent

    if spec.endswith(".npy"):
        try:
            z = np.load(spec)
        except (OSError, ValueError) as exc:
            raise DataError(f"{spec}: cannot read latent vectors ({exc})") from None
        z = np.atleast_2d(z).astype(np.float32)
        if z.ndim != 2 or z.shape[1] != latent_dim:
            raise DataError(f"{spec}: expected vectors of length {latent_dim}, got shape {z.shape}")
        return z
    if Path(spec).suffix:
        raise ConfigError(f"{option}: {spec!r} is neither comma-separated seeds nor a .npy file")
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integer seeds, got {spec!r}") from None
    if not seeds:
        raise ConfigError(f"{option}: no seeds given")
    return np.concatenate([sample_latent(1, latent_dim, seed=s, distribution=dist) for s in seeds])


_source = click.argument("source", metavar="RUN_OR_EXPORT", type=click.Path(exists=True))
_out = click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
                    help="PNG file to write.")


@click.command()
@_source
@_out
@click.option("--n", "n", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Number of cells.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent draws.")
@click.option("--ncols", type=click.IntRange(1), default=None, help="Grid columns (default: square).")
@click.option("--condition", default=None, metavar="COLUMN=VALUE",
              help="Sample from a Gaussian fitted to the encoded cells of this group, e.g. "
                   "'Metadata_MOA=Actin disruptors' (needs --latents).")
@click.option("--latents", "latents_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Output directory of `cytogan encode` (real cells' z with metadata).")
def sample(source, out_path, n, seed, ncols, condition, latents_dir):
    """Write a grid of generated cells (optionally like a group of real cells)."""
    import numpy as np

    from cytogan_tf.grids import write_grid
    from cytogan_tf.latent import sample_latent

    generate, latent_dim, dist = _open_generator(source)
    if condition is None:
        z = sample_latent(n, latent_dim, seed=seed, distribution=dist)
        what = f"{n} cells"
    else:
        from cytogan_tf.latent_cells import fit_gaussian

        table, group = _group_latents(latents_dir, condition, latent_dim, "--condition")
        mean, cov = fit_gaussian(group)
        z = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n).astype(np.float32)
        what = f"{n} cells like the {len(group)} encoded cells of {condition}"
    images = _generate_batched(generate, z)
    grid = write_grid(out_path, images, ncols=ncols)
    click.echo(f"{out_path}: {what}, {grid.shape[1]}x{grid.shape[0]} px", err=True)


def _group_latents(latents_dir, selector, latent_dim, option):
    """(encoded table, z of the cells `selector` picks) from a `cytogan encode` directory."""
    from cytogan_tf.errors import ConfigError, DataError
    from cytogan_tf.latent_cells import read_latents, select_rows

    if latents_dir is None:
        raise ConfigError(f"{option} {selector!r} selects real cells: pass --latents DIR "
                          f"(the output of `cytogan encode`)")
    table, cols = read_latents(latents_dir)
    if len(cols) != latent_dim:
        raise DataError(f"{latents_dir}: latents have {len(cols)} dimensions, the generator takes {latent_dim}")
    return table, table.loc[select_rows(table, selector), cols].to_numpy("float32")


@click.command()
@_source
@_out
@click.option("--steps", type=click.IntRange(2, 256), default=10, show_default=True,
              help="Images along the path, endpoints included.")
@click.option("--seed-a", type=int, default=0, show_default=True, help="Seed of the start z.")
@click.option("--seed-b", type=int, default=1, show_default=True, help="Seed of the end z.")
@click.option("--method", type=click.Choice(["slerp", "lerp"]), default="slerp", show_default=True,
              help="Spherical (slerp: stays where Gaussian latents live) or straight-line path.")
def interpolate(source, out_path, steps, seed_a, seed_b, method):
    """Write a strip of cells morphing from one latent point to another."""
    from cytogan_tf.grids import write_grid
    from cytogan_tf.latent import interpolate as interpolate_z, sample_latent

    generate, latent_dim, dist = _open_generator(source)
    z0 = sample_latent(1, latent_dim, seed=seed_a, distribution=dist)[0]
    z1 = sample_latent(1, latent_dim, seed=seed_b, distribution=dist)[0]
    images = _generate_batched(generate, interpolate_z(z0, z1, steps, method=method))
    grid = write_grid(out_path, images, ncols=steps)
    click.echo(f"{out_path}: {steps} steps, {grid.shape[1]}x{grid.shape[0]} px", err=True)


@click.command()
@_source
@_out
@click.option("--a", "a_spec", required=True,
              help="Group a: seeds (1,2,3), a .npy of z vectors, or a metadata selector such as "
                   "'Metadata_Compound=taxol' (with --latents).")
@click.option("--b", "b_spec", required=True, help="Group b, subtracted (same forms as --a).")
@click.option("--c", "c_spec", required=True,
              help="Group c, added; with selectors, the control cells that are moved.")
@click.option("--latents", "latents_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Output directory of `cytogan encode`, for metadata selectors.")
@click.option("--n-cells", type=click.IntRange(1, 32), default=4, show_default=True,
              help="With selectors: control cells of group c shown, one row each.")
@click.option("--steps", type=click.IntRange(2, 32), default=6, show_default=True,
              help="With selectors: images per row, from the cell (t=0) to t=1 along mean(a)-mean(b).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="With selectors: seed of the control cells picked.")
def arithmetic(source, out_path, a_spec, b_spec, c_spec, latents_dir, n_cells, steps, seed):
    """Latent arithmetic mean(a) - mean(b) + mean(c).

    With seeds or .npy vectors: a strip [a, b, c, result]. With metadata selectors on
    encoded real cells: a few cells of group c moved along the treatment direction
    mean(a) - mean(b), one row per cell, so a control cell takes on the treated phenotype.
    """
    import numpy as np

    from cytogan_tf.grids import write_grid
    from cytogan_tf.latent import vector_arithmetic
    from cytogan_tf.latent_cells import is_selector, treatment_strip

    generate, latent_dim, dist = _open_generator(source)
    specs = {"--a": a_spec, "--b": b_spec, "--c": c_spec}
    if any(is_selector(v) for v in specs.values()):
        from cytogan_tf.errors import ConfigError

        plain = [k for k, v in specs.items() if not is_selector(v)]
        if plain:
            raise ConfigError(f"{', '.join(plain)}: give every group as a COLUMN=VALUE selector "
                              f"when one is (seeds and selectors do not mix)")
        groups = {k: _group_latents(latents_dir, v, latent_dim, k)[1] for k, v in specs.items()}
        direction = groups["--a"].mean(0) - groups["--b"].mean(0)
        controls = groups["--c"]
        pick = np.random.default_rng(seed).choice(len(controls), min(n_cells, len(controls)), replace=False)
        z = treatment_strip(controls[np.sort(pick)], direction, steps)
        grid = write_grid(out_path, _generate_batched(generate, z), ncols=steps)
        click.echo(f"{out_path}: {len(pick)} cells of {c_spec} moved along mean({a_spec}) - "
                   f"mean({b_spec}) in {steps} steps ({len(groups['--a'])} and {len(groups['--b'])} "
                   f"cells), {grid.shape[1]}x{grid.shape[0]} px", err=True)
        return
    za = _latents_from(a_spec, latent_dim, dist, "--a")
    zb = _latents_from(b_spec, latent_dim, dist, "--b")
    zc = _latents_from(c_spec, latent_dim, dist, "--c")
    result = vector_arithmetic(za, zb, zc)
    z = np.stack([za.mean(0), zb.mean(0), zc.mean(0), result]).astype(np.float32)
    grid = write_grid(out_path, generate(z), ncols=4)
    click.echo(f"{out_path}: mean(a) | mean(b) | mean(c) | a - b + c, "
               f"{grid.shape[1]}x{grid.shape[0]} px", err=True)
