"""`cytogan demo`: the CytoGAN study end to end on simulated plates, in one command.

synth -> prepare -> train -> export -> sample / interpolate -> profile (encoder and
hand-made baseline) -> evaluate. Each stage calls the same library function as its CLI
command, so the demo doubles as a worked example. Stages whose output already exists are
reused (the run resumes), so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import apply_overrides, load_config
from .errors import ConfigError
from .io_utils import atomic_write_json

DEMO_JSON = "demo.json"  # the seed and preset the plates were simulated with

ARCHS = ("dcgan", "lsgan", "wgan", "began", "bigan")


@dataclass
class DemoResult:
    out: Path
    paths: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def demo_config(arch: str | None = None, overrides: dict | None = None) -> dict:
    """configs/demo.toml with CLI overrides; `arch` replaces `demo.arch`."""
    cfg = apply_overrides(load_config("demo"), overrides or {})
    if arch is not None:
        cfg["demo"]["arch"] = arch
    return cfg


def arch_config_name(demo_cfg: dict) -> str:
    """The bundled config the demo trains for its arch: `[demo.configs]` names one per
    arch (LSGAN trains with the set loss), any other arch trains its own config."""
    arch = demo_cfg["demo"]["arch"]
    name = str(demo_cfg["demo"].get("configs", {}).get(arch, arch))
    try:
        found = load_config(name).get("model", {}).get("arch")  # data configs have no [model]
    except ConfigError as exc:
        raise ConfigError(f"demo.configs.{arch}: {exc}") from None
    if found is None:
        raise ConfigError(f"demo.configs.{arch}: config {name!r} has no [model] arch to train")
    if found != arch:
        raise ConfigError(f"demo.configs.{arch}: config {name!r} trains {found!r}, not {arch!r}")
    return name


def model_config(demo_cfg: dict) -> dict:
    """The arch's config (`arch_config_name`) with the demo's [model]/[train] overrides on top."""
    flat = {f"{section}.{k}": v for section in ("model", "train")
            for k, v in demo_cfg.get(section, {}).items()}
    cfg = apply_overrides(load_config(arch_config_name(demo_cfg)), flat)
    cfg["model"]["image_size"] = int(demo_cfg["prepare"]["crop_size"])
    return cfg


def run_demo(out, *, arch: str | None = None, seed: int = 0, steps: int | None = None,
             overrides: dict | None = None, progress: bool = True,
             echo: Callable[[str], None] = print) -> DemoResult:
    from .combine import combine_profiles
    from .data.prepare import PrepareOptions, prepare
    from .data.synthetic import load_preset, simulate_plates
    from .evaluation import evaluate_profiles, format_report
    from .export import export_run
    from .profiling import profile_shards
    from .training import train

    cfg = demo_config(arch, overrides)
    if steps is not None:
        cfg["train"]["steps"] = int(steps)
    d = cfg["demo"]
    # the model's config first: a bad --set or [demo.configs] entry stops before any stage runs
    train_cfg = model_config(cfg)
    total = int(train_cfg["train"]["steps"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = DemoResult(out=out)
    plates, shards, run_dir = out / "plates", out / "shards", out / f"run-{d['arch']}"
    exported, figures = out / "exported", out / "figures"

    def stage(name: str, fn):
        echo(f"\n== {name}")
        t0 = time.perf_counter()
        value = fn()
        res.seconds[name] = time.perf_counter() - t0
        echo(f"   ({res.seconds[name]:.0f} s)")
        return value

    # 1. simulated plates in BBBC021's layout
    def synth():
        made = {"seed": int(seed), "synth_preset": d["synth_preset"]}
        if (plates / "BBBC021_v1_image.csv").is_file():
            _check_same_plates(out, made)
            echo(f"   reusing {plates}")
            return
        settings = dataclasses.replace(load_preset(d["synth_preset"]), seed=seed)
        summary = simulate_plates(plates, settings, progress=progress)
        atomic_write_json(out / DEMO_JSON, made)
        echo("   " + ", ".join(f"{k}={v}" for k, v in summary.items()
                                if not isinstance(v, (dict, list))))
    stage("synth: simulated BBBC021-layout plates", synth)

    # 2. segmentation + crops -> shards (resumes by itself)
    def prep():
        options = PrepareOptions.from_config(
            load_config("synth").get("prepare"),
            crop_size=cfg["prepare"]["crop_size"], shards_count=cfg["prepare"]["shards_count"],
            workers=d["workers"], seed=seed, progress=progress)
        result = prepare(plates, shards, layout="bbbc021", options=options)
        echo("   " + result.summary().replace("\n", "\n   "))
    stage("prepare: segment cells, crop, write TFRecord shards", prep)

    # 3. train (resumes an interrupted run; train_cfg was resolved above)
    def fit():
        from .training import read_run_info

        resume = (run_dir / "run.json").is_file()
        finished = resume and int(read_run_info(run_dir).get("step", 0)) >= total
        result = train(train_cfg, shards, run_dir, steps=total, resume=resume, seed=seed,
                       verbose=1 if progress else 0)
        if finished:  # nothing left to train: the finished run is reused as it is
            echo(f"   reusing {run_dir}: already trained to step {result.step} ({result.precision})")
        elif result.images_per_second > 0:
            echo(f"   step {result.step}, {result.precision}, {result.images_per_second:.0f} img/s")
        else:  # a resume with one step left: its only step traces the graph and is not timed
            echo(f"   step {result.step}, {result.precision} (too few steps to time)")
        return result
    stage(f"train: {d['arch']} (configs/{arch_config_name(cfg)}.toml) for {total} steps", fit)

    # 4. export the generator and encoder SavedModels (a new version each time)
    def export():
        name = f"{d['export_name']}-{d['arch']}"
        same = _export_of_run(name, exported, run_dir)
        if same is not None:
            echo(f"   reusing version {same['generator'].name} (exported from this run's final step)")
            return same
        return export_run(run_dir, name, base_dir=exported)
    exp = stage("export: TF Serving SavedModels", export)
    res.paths["generator"], res.paths["encoder"] = Path(exp["generator"]), Path(exp["encoder"])

    # 5. generated cells from the exported generator (the servable contract)
    def generate():
        res.paths.update(_figures(res.paths["generator"], figures, seed))
    stage("generate: sample grid and slerp interpolation", generate)

    # 5b. real cells in latent space: DMSO cells moved along each MOA's direction
    def treatments():
        from .latent_cells import InversionSettings, LatentModels, treatment_figures

        models = LatentModels(res.paths["generator"])
        settings = InversionSettings(steps=int(d.get("inversion_steps", 60)), seed=seed)
        made = treatment_figures(models, shards, figures, per_group=int(d["arithmetic_cells"]),
                                 settings=settings, seed=seed)
        res.paths.update(made)
        echo(f"   {len(made) - 1} treatment-arithmetic figures and a reconstruction in {figures}")
    if int(d.get("arithmetic_cells", 0)) > 0:
        stage("latent: DMSO cells moved along each MOA's direction", treatments)

    # 6. profiles + MOA evaluation: encoder vs hand-made features
    def profile_and_evaluate():
        for label, kwargs in (("encoder", {"encoder": res.paths["encoder"], "features": "encoder"}),
                              ("handcrafted", {"features": "handcrafted"})):
            pdir = out / f"profiles-{label}"
            profile_shards(shards, pdir, normalize=d["normalize"], workers=d["workers"],
                           progress=progress, **kwargs)
            res.metrics[label] = evaluate_profiles(pdir)
            res.paths[f"profiles_{label}"] = pdir
            echo(f"   {label}:\n   " + format_report(res.metrics[label]).replace("\n", "\n   "))
        # both feature sets side by side (cytogan combine): what each adds to the other
        pdir = out / "profiles-combined"
        combine_profiles([res.paths["profiles_encoder"], res.paths["profiles_handcrafted"]], pdir,
                         normalize=d["normalize"])
        res.metrics["combined"] = evaluate_profiles(pdir)
        res.paths["profiles_combined"] = pdir
        echo("   combined (encoder + handcrafted):\n   "
             + format_report(res.metrics["combined"]).replace("\n", "\n   "))
    stage("profile + evaluate: MOA prediction (NSC, NSCB, mAP)", profile_and_evaluate)

    echo("\n" + summary_table(res))
    return res


def _check_same_plates(out: Path, made: dict) -> None:
    """Refuse to reuse plates simulated with another seed or preset (the shards, run and
    profiles built on them would all belong to the other seed)."""
    import json

    path = out / DEMO_JSON
    if not path.is_file():
        return  # plates from an older demo that did not record its seed: reused as before
    before = json.loads(path.read_text())
    if before != made:
        raise ConfigError(f"{out}: holds a demo made with --seed {before.get('seed')} "
                          f"(preset {before.get('synth_preset')}); it cannot be reused for "
                          f"--seed {made['seed']} (preset {made['synth_preset']}). Use another "
                          f"--out, or delete {out} to start over")


def _export_of_run(name: str, exported: Path, run_dir: Path) -> dict | None:
    """The newest export of `name` if it holds `run_dir`'s latest step, else None."""
    from .export import list_versions, model_dirs, read_export_metadata
    from .training import read_run_info

    dirs = model_dirs(name, exported)
    versions = sorted(set(list_versions(dirs["generator"])) & set(list_versions(dirs["encoder"])))
    if not versions:
        return None
    latest = {k: v / str(versions[-1]) for k, v in dirs.items()}
    try:
        meta = read_export_metadata(latest["encoder"])
        step = int(read_run_info(run_dir)["step"])
    except Exception:  # an unreadable export or run: export afresh
        return None
    if meta.get("step") != step or meta.get("run_dir") != str(run_dir.resolve()):
        return None
    return latest


def _figures(generator_dir: Path, figures: Path, seed: int) -> dict[str, Path]:
    import numpy as np
    import tensorflow as tf

    from .grids import write_grid
    from .latent import interpolate, sample_latent

    fn = tf.saved_model.load(str(generator_dir)).signatures["serving_default"]
    latent = int(fn.structured_input_signature[1]["z"].shape[-1])
    grid = figures / "samples.png"
    z = sample_latent(64, latent, seed=seed)
    write_grid(grid, fn(z=tf.constant(z))["images"].numpy(), ncols=8)
    z0, z1 = sample_latent(2, latent, seed=seed + 1)
    strip = figures / "interpolation.png"
    path = np.asarray(interpolate(z0, z1, 10), np.float32)
    write_grid(strip, fn(z=tf.constant(path))["images"].numpy(), ncols=10)
    return {"samples": grid, "interpolation": strip}


def summary_table(res: DemoResult) -> str:
    """The MOA table (encoder vs hand-made vs chance) and where everything was written."""
    lines = ["MOA prediction, 1-NN cosine over treatment profiles",
             f"{'features':<13} {'NSC':>6} {'NSCB':>6} {'mAP':>6}"]
    for label, m in res.metrics.items():
        lines.append(f"{label:<13} {m['nsc']['accuracy']:>6.3f} {m['nscb']['accuracy']:>6.3f} "
                     f"{m['map']:>6.3f}")
    if res.metrics:
        m = next(iter(res.metrics.values()))
        lines.append(f"{'chance':<13} {m['nsc']['chance_prior']:>6.3f} {m['nscb']['chance_prior']:>6.3f}")
    lines.append("")
    for key, path in res.paths.items():
        lines.append(f"{key:<22} {path}")
    for label in res.metrics:
        pdir = res.paths[f"profiles_{label}"]
        for figure in sorted(pdir.glob("*.png")):  # confusion_nsc, confusion_nscb, embedding_pca
            lines.append(f"{figure.stem + ' ' + label:<22} {figure}")
    lines.append(f"{'total time':<22} {sum(res.seconds.values()):.0f} s")
    return "\n".join(lines)
