"""GAN architectures: the CytoGAN study's DCGAN, LSGAN, WGAN-GP, BEGAN, and BiGAN.

`build_gan(cfg["model"])` builds one under the current Keras dtype policy (call
`cytogan_tf.precision.set_policy` first, and enter `strategy.scope()` for tf.distribute);
`make_optimizers(cfg["train"])` returns the two Adam optimizers for `gan.compile`, and
`make_head_optimizer` the D heads' own one where `[train]` sets `head_lr`.
TensorFlow is imported lazily so `import cytogan_tf.models` stays cheap.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError

ARCHS = ("dcgan", "lsgan", "wgan", "began", "bigan")

_COMMON_KEYS = {"arch", "image_size", "latent_dim", "encoder_dim", "widths", "update", "readout",
                "views", "augment"}
# Contrastive self-supervision of D (models/ssl_head.py): archs whose D has a trunk.
_SSL_KEYS = {"ssl", "ssl_weight", "ssl_temperature", "ssl_objective"}
# Weak treatment labels (data/labels.py, models/class_head.py); `train` sets n_classes
# from the shards.
_WEAK_KEYS = {"weak_labels", "weak_weight", "n_classes", "weak_objective", "weak_group", "weak_cancel",
              "weak_temperature"}
# A morphology head: features predict each cell's statistics (models/morphology.py).
_MORPHOLOGY_KEYS = {"morphology_weight", "morphology_statistics"}
# Which of D's pooled features the heads train on (networks.HEAD_FEATURES).
_D_HEAD_KEYS = _SSL_KEYS | _WEAK_KEYS | _MORPHOLOGY_KEYS | {"head_features"}
_ARCH_KEYS = {
    "dcgan": _D_HEAD_KEYS,
    "lsgan": _D_HEAD_KEYS,
    "wgan": {"n_critic", "gp_weight", "critic_norm"} | _D_HEAD_KEYS,
    "began": {"gamma", "lambda_k", "k_init"},
    "bigan": ({"recon_weight", "recon_space", "ssl_views", "latent_from"}
              | _SSL_KEYS | _WEAK_KEYS | _MORPHOLOGY_KEYS | {"head_features"}),
}
DEFAULT_WIDTHS = [256, 128, 64, 32]


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def build_gan(model_cfg: Mapping[str, Any], *, seed: int | None = None):
    """Build the GAN described by a `[model]` config section.

    `seed` seeds the weight initialisers (via keras.utils.set_random_seed, a global
    side effect) and the model's noise SeedGenerator, so a seeded run is repeatable.
    """
    cfg = dict(model_cfg)
    arch = cfg.get("arch")
    _check(arch in ARCHS, f"model.arch: unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    unknown = set(cfg) - _COMMON_KEYS - _ARCH_KEYS[arch]
    _check(not unknown, f"model: unknown key(s) {', '.join(sorted(unknown))} for arch {arch!r}")
    from ..data.shards import crop_size_problem

    image_size = cfg.get("image_size", 64)
    problem = crop_size_problem(image_size)
    _check(problem is None, f"model.image_size: {problem}")
    latent_dim = cfg.get("latent_dim", 100)
    encoder_dim = cfg.get("encoder_dim", 100)
    for key, val in (("latent_dim", latent_dim), ("encoder_dim", encoder_dim)):
        _check(isinstance(val, int) and val > 0, f"model.{key}: {val!r} must be a positive integer")
    widths = list(cfg.get("widths", DEFAULT_WIDTHS))
    _check(
        len(widths) == 4 and all(isinstance(w, int) and w > 0 for w in widths),
        f"model.widths: {widths!r} must be 4 positive integers (deepest stage first)",
    )
    _check_representation(cfg, arch)
    update = cfg.get("update", "simultaneous")
    _check(update in ("simultaneous", "alternating"),
           f"model.update: {update!r} must be 'simultaneous' or 'alternating'")
    if arch == "wgan":
        _check(cfg.get("critic_norm", "layer") in ("layer", "none"),
               f"model.critic_norm: {cfg.get('critic_norm')!r} must be 'layer' or 'none'")
        _check(int(cfg.get("n_critic", 5)) >= 1, "model.n_critic: must be >= 1")
    if arch == "bigan":
        _check_weight(cfg, "recon_weight", 0.0, " (0: plain BiGAN)")
        from .bigan import LATENT_FROM

        latent_from = cfg.get("latent_from", "flatten")
        _check(latent_from in LATENT_FROM,
               f"model.latent_from: {latent_from!r} must be one of {', '.join(LATENT_FROM)}")
        space = cfg.get("recon_space", "pixels")
        _check(space in ("pixels", "features"),
               f"model.recon_space: {space!r} must be 'pixels' or 'features' (D's image stages)")
    if arch == "began":
        for key in ("k_init", "gamma", "lambda_k"):  # absent keys take BEGAN's defaults
            if key not in cfg:
                continue
            val = cfg[key]
            _check(isinstance(val, (int, float)) and not isinstance(val, bool) and 0 <= val <= 1,
                   f"model.{key}: {val!r} must be a number from 0 to 1")

    import keras

    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    extra = {k: cfg[k] for k in _ARCH_KEYS[arch] | {"readout", "views", "augment"} if k in cfg}
    common = dict(latent_dim=latent_dim, image_size=image_size, widths=widths,
                  encoder_dim=encoder_dim, seed=int(seed or 0), update=update, arch=arch)
    return _model_class(arch).from_config_values(**common, **extra)


def _check_weight(cfg: Mapping[str, Any], key: str, default: float, note: str = "") -> None:
    """A loss weight in `[model]`: a non-negative number (a bool is not one)."""
    val = cfg.get(key, default)
    _check(isinstance(val, (int, float)) and not isinstance(val, bool) and val >= 0,
           f"model.{key}: {val!r} must be a non-negative number{note}")


def _check_representation(cfg: Mapping[str, Any], arch: str) -> None:
    """Encoder readout, D augmentation and self-supervision options (see the README)."""
    from .augment import AUGMENTS
    from .networks import READOUTS

    readout = cfg.get("readout", "hidden")
    _check(readout in READOUTS, f"model.readout: {readout!r} must be one of {', '.join(READOUTS)}")
    from .views import VIEWS

    views = cfg.get("views", "single")
    _check(views in VIEWS, f"model.views: {views!r} must be one of {', '.join(VIEWS)}")
    if arch == "bigan":  # E's contrastive head reads E's features, not D's
        from .bigan import ENCODER_HEAD_FEATURES as HEAD_FEATURES
        from .augment import ENCODER_VIEWS

        ssl_views = cfg.get("ssl_views", "window")
        _check(ssl_views in ENCODER_VIEWS,
               f"model.ssl_views: {ssl_views!r} must be one of {', '.join(ENCODER_VIEWS)}")
        head = cfg.get("head_features", "latent")
    else:
        from .networks import HEAD_FEATURES

        head = cfg.get("head_features", "multiscale")
    _check(head in HEAD_FEATURES,
           f"model.head_features: {head!r} must be one of {', '.join(HEAD_FEATURES)}")
    augment = cfg.get("augment", "none")
    _check(augment in AUGMENTS, f"model.augment: {augment!r} must be one of {', '.join(AUGMENTS)}")
    ssl = cfg.get("ssl", "none")
    _check(ssl in ("none", "contrastive"), f"model.ssl: {ssl!r} must be 'none' or 'contrastive'")
    from .augment import BLOCK_VIEWS

    _check(augment not in BLOCK_VIEWS or (ssl == "contrastive" and head == "each"),
           f"model.augment: {augment!r} gives each readout's contrastive head its own views; "
           f"it needs ssl = \"contrastive\" and head_features = \"each\"")
    _check_weight(cfg, "ssl_weight", 1.0)
    temp = cfg.get("ssl_temperature", 0.2)
    _check(isinstance(temp, (int, float)) and not isinstance(temp, bool) and temp > 0,
           f"model.ssl_temperature: {temp!r} must be a positive number")
    from ..losses import SSL_OBJECTIVES

    objective = cfg.get("ssl_objective", "nt-xent")
    _check(objective in SSL_OBJECTIVES,
           f"model.ssl_objective: {objective!r} must be one of {', '.join(SSL_OBJECTIVES)}")
    from ..data.labels import LABEL_KINDS

    weak = cfg.get("weak_labels", "none")
    _check(weak == "none" or weak in LABEL_KINDS,
           f"model.weak_labels: {weak!r} must be one of none, {', '.join(LABEL_KINDS)}")
    _check_weight(cfg, "weak_weight", 1.0)
    from .class_head import WEAK_OBJECTIVES

    objective = cfg.get("weak_objective", "class")
    _check(objective in WEAK_OBJECTIVES,
           f"model.weak_objective: {objective!r} must be one of {', '.join(WEAK_OBJECTIVES)}")
    from ..losses import RUN_GROUP, SET_TEMPERATURE

    group = cfg.get("weak_group", RUN_GROUP)
    _check(isinstance(group, int) and not isinstance(group, bool) and group >= 2 and group % 2 == 0,
           f"model.weak_group: {group!r} must be an even whole number of cells, at least 2 "
           "(each run of one class splits into two halves)")
    from .class_head import GROUPED_OBJECTIVES

    cancel = cfg.get("weak_cancel", 0)
    _check(isinstance(cancel, int) and not isinstance(cancel, bool) and cancel >= 0,
           f"model.weak_cancel: {cancel!r} must be a whole number >= 0 (0: every other class "
           "is a negative)")
    temperature = cfg.get("weak_temperature", SET_TEMPERATURE)
    _check(isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
           and temperature > 0, f"model.weak_temperature: {temperature!r} must be a positive number")
    _check(temperature == SET_TEMPERATURE or objective == "set",
           f"model.weak_temperature: {temperature} is the set loss's; weak_objective "
           f"{objective!r} has no temperature (its head learns its own scale)")
    _check(cancel == 0 or objective in GROUPED_OBJECTIVES,
           f"model.weak_cancel: {cancel} needs a weak_objective over runs of one class "
           f"({', '.join(GROUPED_OBJECTIVES)}), not {objective!r}")
    _check_weight(cfg, "morphology_weight", 0.0, " (0: no morphology head)")
    from .morphology import STATISTIC_SETS

    which = cfg.get("morphology_statistics", "shape")
    _check(which in STATISTIC_SETS,
           f"model.morphology_statistics: {which!r} must be one of {', '.join(STATISTIC_SETS)}")
    n_classes = cfg.get("n_classes", 0)
    _check(weak == "none" or (isinstance(n_classes, int) and n_classes >= 2),
           f"model.n_classes: {n_classes!r}; weak_labels={weak} needs the number of classes "
           f"(train sets it from the shards' cell table)")


def _model_class(arch: str):
    if arch == "dcgan":
        from .dcgan import DCGAN
        return DCGAN
    if arch == "lsgan":
        from .lsgan import LSGAN
        return LSGAN
    if arch == "wgan":
        from .wgan import WGANGP
        return WGANGP
    if arch == "bigan":
        from .bigan import BiGAN
        return BiGAN
    from .began import BEGAN
    return BEGAN


def make_optimizers(train_cfg: Mapping[str, Any]):
    """(g_optimizer, d_optimizer): Adam with `g_lr`/`d_lr`, `beta1`, `beta2` from `[train]`."""
    for key in ("g_lr", "d_lr"):
        _check(key in train_cfg, f"train.{key}: missing (learning rate of the {'generator' if key == 'g_lr' else 'discriminator'})")
    vals = {k: train_cfg.get(k, d) for k, d in (("g_lr", None), ("d_lr", None), ("beta1", 0.5), ("beta2", 0.999))}
    for key, val in vals.items():
        _check(isinstance(val, (int, float)) and not isinstance(val, bool) and val >= 0,
               f"train.{key}: {val!r} must be a non-negative number")
    return _adam(vals["g_lr"], vals, "g_adam"), _adam(vals["d_lr"], vals, "d_adam")


def _adam(lr, train_cfg: Mapping[str, Any], name: str):
    """Adam at `lr` with `[train]`'s beta1/beta2 (DCGAN's 0.5, 0.999 by default)."""
    import keras

    return keras.optimizers.Adam(lr, beta_1=train_cfg.get("beta1", 0.5),
                                 beta_2=train_cfg.get("beta2", 0.999), name=name)


def make_head_optimizer(train_cfg: Mapping[str, Any]):
    """Adam at `head_lr` for D's representation heads (BaseGAN.compile's
    `head_optimizer`), or None when `[train]` sets no `head_lr` or 0: the heads then
    share D's optimizer and learning rate."""
    lr = train_cfg.get("head_lr") or 0.0
    _check(isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr >= 0,
           f"train.head_lr: {lr!r} must be a number >= 0 (0: the heads use D's optimizer)")
    if lr == 0:
        return None
    return _adam(lr, train_cfg, "head_adam")


def __getattr__(name):  # lazy access to the classes without importing TensorFlow up front
    if name == "BaseGAN":
        from .base import BaseGAN
        return BaseGAN
    classes = {"DCGAN": "dcgan", "LSGAN": "lsgan", "WGANGP": "wgan", "BEGAN": "began", "BiGAN": "bigan"}
    if name in classes:
        return _model_class(classes[name])
    raise AttributeError(name)
