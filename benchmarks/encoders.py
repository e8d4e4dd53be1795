"""Do the GAN encoders learn anything for profiling? Trained vs untrained vs hand-made.

For each plate preset (demo: MOAs differ in size, brightness and texture; texture: only in
texture and shape) and each model variant, over several training seeds, it reports NSC /
NSCB 1-NN MOA accuracy and mAP (global TVN, the demo's normalisation) of:

- the trained encoder, for every readout of the same trained networks (hidden, multiscale,
  texture), each on the crop as it is and averaged over its 8 flips and rotations
  ("dihedral" rows, models/views.py);
- the same network untrained (same seed): what the architecture alone gives;
- hand-made features, and their size + mean-intensity subset (which must be near chance
  on the texture preset, or the preset does not do what it says);
- hand-made (+) encoder: each set normalised alone, then each feature z-scored and each
  block weighted by 1/sqrt(its width) and joined, so neither dominates (cytogan_tf.combine);
- NSC over training steps (checkpoints), to show whether a model is learning at all.

    python benchmarks/encoders.py --workdir /tmp/enc --presets demo,texture \
        --variants lsgan,lsgan-ssl --seeds 0,1,2

Everything a stage writes is reused by a rerun (plates, shards, hand-made tables, runs),
so an interrupted benchmark continues. Results: <workdir>/encoders.json and tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

# Variants: overrides of configs/<arch>.toml's [model] on top of the demo's widths. Each
# names every representation option, so a change of the configs' defaults changes no row.
PLAIN = {"augment": "none", "ssl": "none"}
SSL = {"augment": "diff", "ssl": "contrastive"}
WINDOW = {"augment": "window", "ssl": "contrastive", "head_features": "texture"}
# BiGAN with E's own contrastive head on z (two windows of each real cell), the base of
# the bigan-ssl-* variants.
BIGAN_SSL = {"arch": "bigan", "augment": "none", "ssl": "contrastive", "head_features": "latent"}
# LSGAN's D trained by the set loss in runs of 16 on its multiscale readout (no
# contrastive head): the reference the set-loss variants below change one thing of.
SET_MS_G16 = {"arch": "lsgan", "augment": "diff", "ssl": "none", "head_features": "multiscale",
              "readout": "multiscale", "weak_labels": "treatment", "weak_objective": "set",
              "weak_group": 16, "train": {"head_lr": 3e-4}}
# The configs' values of keys whose defaults have since changed, as every earlier variant
# was measured with them.
PINNED = {"bigan": {"ssl": "none", "ssl_weight": 1.0, "morphology_weight": 0.0}}
VARIANTS = {
    "lsgan": {"arch": "lsgan", **PLAIN},
    "lsgan-aug": {"arch": "lsgan", **PLAIN, "augment": "diff"},
    "lsgan-ssl": {"arch": "lsgan", **SSL},
    "lsgan-ssl-strong": {"arch": "lsgan", "augment": "strong", "ssl": "contrastive"},
    # The contrastive head trains the texture readout itself (second-order pooling).
    "lsgan-ssl-texture": {"arch": "lsgan", "augment": "strong", "ssl": "contrastive",
                          "head_features": "texture", "readout": "texture"},
    # A first stage as wide as the second (32 channels): a richer texture readout.
    "lsgan-ssl-wide": {"arch": "lsgan", "augment": "strong", "ssl": "contrastive",
                       "widths": [128, 64, 32, 32]},
    # The configs' own widths (configs/lsgan.toml; what `cytogan train` uses outside the demo).
    "lsgan-ssl-full": {"arch": "lsgan", "augment": "strong", "ssl": "contrastive",
                       "widths": [256, 128, 64, 32]},
    # ContraD's balance: the contrastive task trains D's stages at its own rate (14x d_lr),
    # so the representation is driven by the views more than by the adversarial game.
    "lsgan-ssl-headlr": {"arch": "lsgan", "augment": "strong", "ssl": "contrastive",
                         "train": {"head_lr": 1e-3}},
    # Views are two windows of one cell (augment "window"), matched by the texture readout:
    # a contrastive task only the cell's texture statistics can solve.
    "lsgan-ssl-window": {"arch": "lsgan", **WINDOW},
    # Window views with the contrastive head at its own rate (train.head_lr): the views'
    # task points the first stage where the texture readout needs it; learn it faster.
    "lsgan-ssl-window-headlr": {"arch": "lsgan", **WINDOW, "train": {"head_lr": 1e-3}},
    # The LSGAN default (configs/lsgan.toml): window views, the head at 3e-4.
    "lsgan-ssl-window-headlr-slow": {"arch": "lsgan", **WINDOW, "train": {"head_lr": 3e-4}},
    # The default at the configs' own widths (32 first-stage channels: a 528-feature
    # texture readout), as `cytogan train --config lsgan` runs it outside the demo.
    "lsgan-ssl-window-headlr-slow-full": {"arch": "lsgan", **WINDOW, "widths": [256, 128, 64, 32],
                                          "train": {"head_lr": 3e-4}},
    # The head at 1e-3 at the configs' widths: the 3e-4 gain was the 16-channel first
    # stage's; a 32-channel stage may need the faster rate to move its readout.
    "lsgan-ssl-window-headlr-full": {"arch": "lsgan", **WINDOW, "widths": [256, 128, 64, 32],
                                     "train": {"head_lr": 1e-3}},
    # The default with a softer contrastive softmax: 2k cells are easy to tell apart one
    # by one, and a higher temperature weighs the hardest negatives less.
    "lsgan-ssl-window-headlr-slow-t05": {"arch": "lsgan", **WINDOW, "ssl_temperature": 0.5,
                                         "train": {"head_lr": 3e-4}},
    # The head on the multiscale readout at the configs' widths: the readout that training
    # lifts there (demo plates +0.056 NSC with the head on the texture readout), trained by
    # the window views' task at every stage rather than by the adversarial game alone.
    "lsgan-ssl-window-ms-full": {"arch": "lsgan", **WINDOW, "head_features": "multiscale",
                                 "widths": [256, 128, 64, 32], "train": {"head_lr": 3e-4}},
    # The head on both readouts: the texture readout keeps the first stage on the
    # windows' texture, the pooled stages learn the deeper scales beside it.
    "lsgan-ssl-window-both-full": {"arch": "lsgan", **WINDOW, "head_features": "both",
                                   "readout": "multiscale", "widths": [256, 128, 64, 32],
                                   "train": {"head_lr": 3e-4}},
    "lsgan-ssl-window-both": {"arch": "lsgan", **WINDOW, "head_features": "both",
                              "readout": "multiscale", "train": {"head_lr": 3e-4}},
    "lsgan-ssl-window-both-fast": {"arch": "lsgan", **WINDOW, "head_features": "both",
                                   "readout": "multiscale", "train": {"head_lr": 1e-3}},
    # Each head its own views: windows for the texture readout's, and for the multiscale
    # readout's a cell against its own flat-coloured silhouette, so that D's deeper
    # stages must carry the outline's shape (the MOA every readout misses on 4x cells).
    "lsgan-ssl-window-silhouette": {"arch": "lsgan", "augment": "window-silhouette",
                                    "ssl": "contrastive", "head_features": "each",
                                    "readout": "multiscale", "train": {"head_lr": 3e-4}},
    # The head on both readouts with a cell's two windows of one side (window-paired).
    "lsgan-ssl-window-paired-both": {"arch": "lsgan", **WINDOW, "augment": "window-paired",
                                     "head_features": "both", "readout": "multiscale",
                                     "train": {"head_lr": 3e-4}},
    # The head on both readouts with views that keep the whole cell (flips, rotations,
    # shifts): whether the deeper stages keep size and brightness, which the demo needs.
    "lsgan-ssl-diff-both": {"arch": "lsgan", **WINDOW, "augment": "diff", "head_features": "both",
                            "readout": "multiscale", "train": {"head_lr": 3e-4}},
    # The head on the multiscale readout at the demo's widths, read out (and curved) there.
    "lsgan-ssl-window-ms": {"arch": "lsgan", **WINDOW, "head_features": "multiscale",
                            "readout": "multiscale", "train": {"head_lr": 3e-4}},
    # The same with the `strong` views (zoom, stain gains), which keep the cell's outline
    # and nuclei whole: the multiscale readout's deep stages see shape, not only texture.
    "lsgan-ssl-strong-ms-full": {"arch": "lsgan", "augment": "strong", "ssl": "contrastive",
                                 "head_features": "multiscale", "widths": [256, 128, 64, 32],
                                 "train": {"head_lr": 3e-4}},
    "lsgan-ssl-window-headlr-x3": {"arch": "lsgan", **WINDOW, "train": {"head_lr": 3e-3}},
    # A cell's two windows of one side (augment "window-paired"): the views no longer differ
    # in how much of them the cell fills, so matching them does not teach size-blindness.
    "lsgan-ssl-window-paired": {"arch": "lsgan", **WINDOW, "augment": "window-paired"},
    "lsgan-ssl-window-paired-headlr": {"arch": "lsgan", **WINDOW, "augment": "window-paired",
                                       "train": {"head_lr": 1e-3}},
    # Window views at the configs' own widths (what `cytogan train --config lsgan` runs).
    "lsgan-ssl-window-full": {"arch": "lsgan", **WINDOW, "widths": [256, 128, 64, 32]},
    "lsgan-ssl-strong-t01": {"arch": "lsgan", "augment": "strong", "ssl": "contrastive", "ssl_temperature": 0.1},
    "lsgan-ssl-fast": {"arch": "lsgan", **SSL, "train": {"d_lr": 2e-4}},
    "lsgan-ssl-t01": {"arch": "lsgan", **SSL, "ssl_temperature": 0.1},
    "lsgan-ssl-w3": {"arch": "lsgan", **SSL, "ssl_weight": 3.0},
    # Weak supervision: D also classifies each real cell's treatment (data/labels.py).
    "lsgan-weak": {"arch": "lsgan", "augment": "strong", "ssl": "none", "weak_labels": "treatment"},
    "lsgan-ssl-weak": {"arch": "lsgan", "augment": "strong", "ssl": "contrastive",
                       "weak_labels": "treatment"},
    "lsgan-weak-compound": {"arch": "lsgan", "augment": "strong", "ssl": "none",
                            "weak_labels": "compound"},
    "lsgan-weak-w10": {"arch": "lsgan", "augment": "strong", "ssl": "none", "weak_labels": "treatment",
                       "weak_weight": 10.0},
    "lsgan-weak-diff-w10": {"arch": "lsgan", "augment": "diff", "ssl": "none",
                            "weak_labels": "treatment", "weak_weight": 10.0},
    # The texture readout trained on treatment labels by its own optimizer (train.head_lr):
    # at D's 7e-5 the class loss barely moves the first stage in 800 steps.
    "lsgan-weak-texture": {"arch": "lsgan", "augment": "strong", "ssl": "none",
                           "weak_labels": "treatment", "head_features": "texture",
                           "readout": "texture", "train": {"head_lr": 1e-3}},
    "lsgan-weak-texture-diff": {"arch": "lsgan", "augment": "diff", "ssl": "none",
                                "weak_labels": "treatment", "head_features": "texture",
                                "readout": "texture", "train": {"head_lr": 1e-3}},
    "dcgan-ssl": {"arch": "dcgan", **SSL},
    "wgan-ssl": {"arch": "wgan", **SSL},
    "bigan": {"arch": "bigan", "augment": "none"},
    # configs/bigan.toml as shipped, whatever it holds now.
    "bigan-shipped": {"arch": "bigan", "shipped": True},
    "bigan-aug": {"arch": "bigan", "augment": "diff"},
    # ALICE's cycle term: G(E(x)) must reconstruct x (L1), weighted 1 or 10 against the
    # pair game, so E learns from every pixel of every real cell.
    "bigan-recon": {"arch": "bigan", "augment": "none", "recon_weight": 1.0},
    "bigan-recon10": {"arch": "bigan", "augment": "none", "recon_weight": 10.0},
    # The cycle term on D's image stages (VAE-GAN's learned similarity), not pixels.
    "bigan-recon-feat": {"arch": "bigan", "augment": "none", "recon_weight": 1.0,
                         "recon_space": "features"},
    "bigan-recon-feat10": {"arch": "bigan", "augment": "none", "recon_weight": 10.0,
                           "recon_space": "features"},
    # A contrastive head on E itself (two windows of each real cell, SimCLR), in G and
    # E's loss beside the pair game: the pair game teaches E size and layout, the
    # windows texture. The head reads E's z, E's multiscale and texture readouts, or all.
    "bigan-ssl-z": BIGAN_SSL,
    "bigan-ssl-both": {**BIGAN_SSL, "head_features": "both"},
    "bigan-ssl-all": {**BIGAN_SSL, "head_features": "all"},
    "bigan-ssl-texture": {**BIGAN_SSL, "head_features": "texture"},
    "bigan-ssl-z-strong": {**BIGAN_SSL, "ssl_views": "strong"},
    "bigan-ssl-z-w03": {**BIGAN_SSL, "ssl_weight": 0.3},
    "bigan-ssl-z-w3": {**BIGAN_SSL, "ssl_weight": 3.0},
    "bigan-ssl-z-diff": {**BIGAN_SSL, "ssl_views": "diff"},
    "bigan-recon-ssl-z": {**BIGAN_SSL, "recon_weight": 1.0},
    "bigan-ssl-z-w10": {**BIGAN_SSL, "ssl_weight": 10.0},
    "bigan-ssl-z-w3-t05": {**BIGAN_SSL, "ssl_weight": 3.0, "ssl_temperature": 0.5},
    "bigan-recon-ssl-z-w3": {**BIGAN_SSL, "ssl_weight": 3.0, "recon_weight": 1.0},
    # The configs' own widths (configs/bigan.toml), E's head on z at weight 3.
    "bigan-ssl-z-w3-full": {**BIGAN_SSL, "ssl_weight": 3.0, "widths": [256, 128, 64, 32]},
    # E's z from its pooled stages (latent_from "pooled"), not the flattened deepest map.
    "bigan-pool": {"arch": "bigan", "augment": "none", "latent_from": "pooled"},
    "bigan-pool-ssl-z": {**BIGAN_SSL, "latent_from": "pooled"},
    "bigan-pool-ssl-z-w3": {**BIGAN_SSL, "ssl_weight": 3.0, "latent_from": "pooled"},
    "bigan-pooltex-ssl-z-w3": {**BIGAN_SSL, "ssl_weight": 3.0, "latent_from": "pooled-texture"},
    # A cell's two windows of one side (window-paired): the views no longer differ in how
    # much of them the cell fills, so matching them need not discard its size.
    "bigan-ssl-z-w3-paired": {**BIGAN_SSL, "ssl_weight": 3.0, "ssl_views": "window-paired"},
    "bigan-ssl-ms-w3-paired": {**BIGAN_SSL, "ssl_weight": 3.0, "head_features": "multiscale",
                               "ssl_views": "window-paired"},
    "bigan-ssl-all-paired": {**BIGAN_SSL, "head_features": "all", "ssl_views": "window-paired"},
    "bigan-pool-ssl-z-w3-paired": {**BIGAN_SSL, "ssl_weight": 3.0, "latent_from": "pooled",
                                   "ssl_views": "window-paired"},
    "bigan-pool-recon-ssl-z-w3": {**BIGAN_SSL, "ssl_weight": 3.0, "latent_from": "pooled",
                                  "recon_weight": 1.0},
    # VICReg in place of NT-Xent (ssl_objective): no negatives, so two cells of one look
    # are not pushed apart; spread and decorrelation keep every dimension in use.
    "lsgan-vicreg-window-headlr-slow": {"arch": "lsgan", **WINDOW, "ssl_objective": "vicreg",
                                        "train": {"head_lr": 3e-4}},
    "bigan-vicreg-z-w3": {**BIGAN_SSL, "ssl_weight": 3.0, "ssl_objective": "vicreg"},
    "bigan-vicreg-ms-w3-paired": {**BIGAN_SSL, "ssl_weight": 3.0, "head_features": "multiscale",
                                  "ssl_views": "window-paired", "ssl_objective": "vicreg"},
    "bigan-vicreg-all-paired": {**BIGAN_SSL, "ssl_weight": 3.0, "head_features": "all",
                                "ssl_views": "window-paired", "ssl_objective": "vicreg"},
    "lsgan-vicreg-window-both": {"arch": "lsgan", **WINDOW, "head_features": "both",
                                 "readout": "multiscale", "ssl_objective": "vicreg",
                                 "train": {"head_lr": 3e-4}},
    # E's head matches each cell with its own flat-coloured silhouette: z must carry the
    # outline's shape (the MOA the texture readouts miss on 4x the cells).
    "bigan-ssl-z-w3-silh": {**BIGAN_SSL, "ssl_weight": 3.0, "ssl_views": "cell-silhouette"},
    # The moving average of G's and E's weights (train.ema_decay) read out in place of the
    # last step's: the readouts' scores wander by 0.04-0.15 NSC between checkpoints.
    "bigan-vicreg-ms-w3-paired-ema": {**BIGAN_SSL, "ssl_weight": 3.0, "head_features": "multiscale",
                                      "ssl_views": "window-paired", "ssl_objective": "vicreg",
                                      "train": {"ema_decay": 0.995}},
    "bigan-ssl-z-w3-ema": {**BIGAN_SSL, "ssl_weight": 3.0, "train": {"ema_decay": 0.995}},
    "lsgan-ssl-window-headlr-slow-ema": {"arch": "lsgan", **WINDOW,
                                         "train": {"head_lr": 3e-4, "ema_decay": 0.995}},
    # A 32-d z in place of 100: 1,710 cells and 800 steps may fill only a few directions
    # of z with what tells treatments apart, and the rest adds noise to every profile.
    "bigan-ssl-z-w3-l32": {**BIGAN_SSL, "ssl_weight": 3.0, "latent_dim": 32},
    # ... and a 256-d z: at 32 dims E's z fell to 0.27 NSC on the texture plates (0.53 at
    # 100), so z's width may be what limits the texture it holds.
    "bigan-ssl-z-w3-l256": {**BIGAN_SSL, "ssl_weight": 3.0, "latent_dim": 256},
    "bigan-ssl-z-w3-l512": {**BIGAN_SSL, "ssl_weight": 3.0, "latent_dim": 512},
    # VICReg's variance and covariance terms keep every direction of a wide z in use.
    "bigan-vicreg-z-w3-l256": {**BIGAN_SSL, "ssl_weight": 3.0, "ssl_objective": "vicreg",
                               "latent_dim": 256},
    # Weak treatment labels on E's z (a linear class head in G and E's loss; models/bigan.py):
    # the labels say which differences between cells the compounds cause, which neither the
    # pair game nor the windows ask of z.
    "bigan-ssl-z-w3-weak": {**BIGAN_SSL, "ssl_weight": 3.0, "weak_labels": "treatment"},
    "bigan-weak": {"arch": "bigan", "augment": "none", "weak_labels": "treatment"},
    # E's z predicts each cell's morphology statistics (models/morphology.py).
    "bigan-morph": {"arch": "bigan", "augment": "none", "morphology_weight": 1.0},
    "bigan-ssl-z-w3-morph": {**BIGAN_SSL, "ssl_weight": 3.0, "morphology_weight": 1.0},
    "bigan-ssl-z-w3-morph3": {**BIGAN_SSL, "ssl_weight": 3.0, "morphology_weight": 3.0},
    "bigan-ssl-z-w3-morphtex": {**BIGAN_SSL, "ssl_weight": 3.0, "morphology_weight": 1.0,
                                "morphology_statistics": "shape-texture"},
    # The LSGAN default with a morphology head on D's texture readout (trained with the
    # contrastive head by the head optimizer): the readout must keep each whole cell's
    # statistics, which the windows' task discards (size, brightness).
    "lsgan-default-morph": {"arch": "lsgan", **WINDOW, "morphology_weight": 1.0,
                            "train": {"head_lr": 3e-4}},
    "lsgan-default-hand": {"arch": "lsgan", **WINDOW, "morphology_weight": 1.0,
                           "morphology_statistics": "hand-made", "train": {"head_lr": 3e-4}},
    # E's z predicts each cell's hand-made features (features.py) instead.
    "bigan-hand": {"arch": "bigan", "augment": "none", "morphology_weight": 1.0,
                   "morphology_statistics": "hand-made"},
    "bigan-ssl-z-w3-hand": {**BIGAN_SSL, "ssl_weight": 3.0, "morphology_weight": 1.0,
                            "morphology_statistics": "hand-made"},
    # Weak labels at the level of a profile (losses.set_contrast_loss): batches hold runs
    # of 8 cells of one treatment (or compound); the mean of one half of a run must pick
    # the other half's mean among the batch's. Whole cells, not windows.
    "lsgan-default-set": {"arch": "lsgan", **WINDOW, "weak_labels": "treatment",
                          "weak_objective": "set", "train": {"head_lr": 3e-4}},
    "lsgan-default-set-compound": {"arch": "lsgan", **WINDOW, "weak_labels": "compound",
                                   "weak_objective": "set", "train": {"head_lr": 3e-4}},
    "lsgan-default-set-w3": {"arch": "lsgan", **WINDOW, "weak_labels": "treatment",
                             "weak_objective": "set", "weak_weight": 3.0, "train": {"head_lr": 3e-4}},
    # The contrastive head on both readouts (texture plates' largest multiscale gain) with
    # the set loss on the same features, read out at the multiscale readout.
    "lsgan-both-set": {"arch": "lsgan", **WINDOW, "head_features": "both", "readout": "multiscale",
                       "weak_labels": "treatment", "weak_objective": "set",
                       "train": {"head_lr": 3e-4}},
    "lsgan-both-set-compound": {"arch": "lsgan", **WINDOW, "head_features": "both",
                                "readout": "multiscale", "weak_labels": "compound",
                                "weak_objective": "set", "train": {"head_lr": 3e-4}},
    # The set loss alone on the multiscale readout, D's views whole cells: nothing teaches
    # the features to ignore size (the windows' task does).
    "lsgan-set-ms": {"arch": "lsgan", "augment": "diff", "ssl": "none", "head_features": "multiscale",
                     "readout": "multiscale", "weak_labels": "treatment", "weak_objective": "set",
                     "train": {"head_lr": 3e-4}},
    "lsgan-set-ms-g16": SET_MS_G16,
    "lsgan-set-ms-w3": {"arch": "lsgan", "augment": "diff", "ssl": "none", "head_features": "multiscale",
                        "readout": "multiscale", "weak_labels": "treatment", "weak_objective": "set",
                        "weak_weight": 3.0, "train": {"head_lr": 3e-4}},
    # The set loss in runs of 16 on the texture readout (second-order statistics of the
    # first stage), the readout whose untrained control is strongest on both plate sets.
    "lsgan-set-tex-g16": {"arch": "lsgan", "augment": "diff", "ssl": "none",
                          "head_features": "texture", "readout": "texture",
                          "weak_labels": "treatment", "weak_objective": "set", "weak_group": 16,
                          "train": {"head_lr": 3e-4}},
    # Each run's mean class logits against its treatment among all of them
    # (weak_objective "set_class"), in runs of 16 and of 8 cells.
    "lsgan-setclass-ms-g16": {**SET_MS_G16, "weak_objective": "set_class"},
    "lsgan-setclass-ms-g8": {**SET_MS_G16, "weak_objective": "set_class", "weak_group": 8},
    # The set loss with twice the runs per batch (batch 128: 8 runs of 16, or 4 runs of
    # 32); run with half the --steps of batch 64 to see the same cells.
    "lsgan-set-ms-g16-b128": {**SET_MS_G16, "train": {"head_lr": 3e-4, "batch_size": 128}},
    "lsgan-set-ms-g32-b128": {**SET_MS_G16, "weak_group": 32,
                              "train": {"head_lr": 3e-4, "batch_size": 128}},
    # Ablation: the set loss alone trains D's trunk (d_lr 0: no adversarial updates of D;
    # G still trains against the frozen D). Is the GAN part of the gain?
    "lsgan-set-ms-g16-only": {**SET_MS_G16, "train": {"head_lr": 3e-4, "d_lr": 0.0}},
    # The set loss on DCGAN's D (d_lr 2e-4), and on LSGAN's with D at DCGAN's rate: does a
    # stronger adversarial D help the set loss?
    "dcgan-set-ms-g16": {**SET_MS_G16, "arch": "dcgan"},
    "lsgan-set-ms-g16-dfast": {**SET_MS_G16, "train": {"head_lr": 3e-4, "d_lr": 2e-4}},
    # The set loss at the configs' full widths ([256, 128, 64, 32]; ~1.5x a demo-width
    # step, so 800 steps cost about 1,200 of the demo's): does a wider D give the set loss
    # more to point at treatment differences?
    "lsgan-set-ms-g16-full": {**SET_MS_G16, "widths": [256, 128, 64, 32]},
    # The set loss with a morphology head on D's pooled features (models/morphology.py:
    # each whole cell's size, intensity, spread and texture statistics as linear
    # regression targets): the set loss points the features at treatment differences, the
    # head keeps what the demo's MOAs differ in (size, brightness) readable per cell.
    "lsgan-set-ms-g16-morph": {**SET_MS_G16, "morphology_weight": 1.0,
                               "morphology_statistics": "shape-texture"},
    # False-negative cancellation (model.weak_cancel): the nearest other treatments are left
    # out of each softmax, not pushed away (they are the likeliest to share a mechanism).
    # set: 2 of a half-mean's 6 negatives (about one run); set_class: 5 of 48 other
    # treatments (about one MOA's compounds and doses).
    "lsgan-set-ms-g16-cancel2": {**SET_MS_G16, "weak_cancel": 2},
    "lsgan-setclass-ms-g16-cancel5": {**SET_MS_G16, "weak_objective": "set_class", "weak_cancel": 5},
    # The set loss's softmax temperature (model.weak_temperature, 0.2 above): colder weighs
    # the hardest negatives more (cancelling them, above, lost on the texture plates).
    "lsgan-set-ms-g16-t01": {**SET_MS_G16, "weak_temperature": 0.1},
    "lsgan-set-ms-g16-t05": {**SET_MS_G16, "weak_temperature": 0.5},
    # The set loss with the exported weights a moving average over ~the last 200 steps
    # (train.ema_decay): NSC wanders between checkpoints; does the average sit higher?
    "lsgan-set-ms-g16-ema": {**SET_MS_G16, "train": {"head_lr": 3e-4, "ema_decay": 0.995}},
    # The set loss's own rate (train.head_lr, 3e-4 above; D's trunk learns from it at this
    # rate): the set loss on the texture plates barely falls by step 650 and more runs per
    # batch did not help, so does it want bigger updates, or smaller ones?
    "lsgan-set-ms-g16-hlr6": {**SET_MS_G16, "train": {"head_lr": 6e-4}},
    "lsgan-set-ms-g16-hlr15": {**SET_MS_G16, "train": {"head_lr": 1.5e-4}},
    # Runs of one compound, its doses mixed (weak_labels "compound"): two halves of a run
    # share the compound's mechanism but not its dose, so dose-only differences cannot match them.
    "lsgan-set-ms-g16-compound": {**SET_MS_G16, "weak_labels": "compound"},
    "bigan-shipped-set": {"arch": "bigan", "shipped": True, "weak_labels": "treatment",
                          "weak_objective": "set"},
    "bigan-shipped-set-compound": {"arch": "bigan", "shipped": True, "weak_labels": "compound",
                                   "weak_objective": "set"},
    "began": {"arch": "began"},
}
READOUTS = ("hidden", "multiscale", "texture")
VIEWS = ("single", "dihedral")
SIZE_INTENSITY = [f"{o}_AreaShape_Area" for o in ("Nuclei", "Cells")] + [
    f"{o}_Intensity_MeanIntensity_{c}" for o in ("Nuclei", "Cells") for c in ("DNA", "Actin", "Tubulin")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/cytogan-encoders")
    p.add_argument("--presets", default="demo,texture",
                   help="synth presets, or texture4x / demo4x (that preset with 4x the fields)")
    p.add_argument("--variants", default="lsgan,lsgan-ssl", help=f"from {', '.join(VARIANTS)}")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (plates use --data-seed)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="default: the demo's (configs/demo.toml [train] steps)")
    p.add_argument("--curve-every", type=int, default=600, help="steps between NSC-curve points")
    p.add_argument("--normalize", default="tvn", choices=("none", "dmso", "tvn"))
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- data


# Benchmark-only plate sets: a synth preset with overrides. texture4x: the texture plates
# with 8 fields per well instead of 2 (4x the cells, same treatments), to ask whether
# the data size limits what training adds; demo4x the same for the demo plates.
PLATE_SETS = {"texture4x": ("texture", {"sites": 8}), "demo4x": ("demo", {"sites": 8})}


def make_shards(work: Path, preset: str, crop: int, seed: int, workers: int) -> Path:
    from cytogan_tf.data.prepare import PrepareOptions, prepare
    from cytogan_tf.data.synthetic import load_preset, simulate_plates

    plates, shards = work / preset / "plates", work / preset / "shards"
    if not (plates / "BBBC021_v1_image.csv").is_file():
        base, overrides = PLATE_SETS.get(preset, (preset, {}))
        synth = dataclasses.replace(load_preset(base), seed=seed, **overrides)
        simulate_plates(plates, synth, progress=False)
    if not (shards / "dataset.json").is_file():
        prepare(plates, shards, options=PrepareOptions(crop_size=crop, workers=workers, seed=seed,
                                                       progress=False))
    return shards


def handmade_path(work: Path, preset: str) -> Path:
    return work / preset / "handmade_cells.parquet"


def table_path(work: Path, preset: str, variant: str, seed: int, key: str) -> Path:
    """Where a run's per-cell embeddings for one features key are saved (encoder_stats.py reads them)."""
    return work / "tables" / f"{preset}-{variant}-s{seed}-{key.replace(' ', '-')}.parquet"


def handmade_cells(work: Path, preset: str, shards: Path, workers: int):
    import pandas as pd

    from cytogan_tf.profiling import cell_features

    path = handmade_path(work, preset)
    if path.is_file():
        return pd.read_parquet(path)
    table, _ = cell_features(shards, features="handcrafted", workers=workers, progress=False)
    table.to_parquet(path)
    return table


class ModelEncoder:
    """An in-process Keras encoder with the exported encoder's interface ([0, 1] in)."""

    def __init__(self, model, image_size, name):
        self.model, self.image_size, self.name, self.path = model, int(image_size), name, name

    def __call__(self, images):
        return np.asarray(self.model(images * 2.0 - 1.0, training=False), np.float32)


def embed_cells(shards: Path, model, image_size: int, name: str):
    from cytogan_tf.profiling import cell_features

    table, stats = cell_features(shards, features="encoder", encoder=ModelEncoder(model, image_size, name),
                                 progress=False)
    return table


# --------------------------------------------------------------------------- scoring


def evaluate_combined(handmade, encoded, normalize="tvn") -> dict:
    """Hand-made (+) encoder: each set normalised alone, z-scored, / sqrt(width), joined
    at the well level (cytogan_tf.combine, as `cytogan combine` does); evaluate_table's
    result (per-query predictions included)."""
    return evaluate_joined({"enc": encoded, "hand": handmade}, normalize)


def evaluate_joined(cell_tables: dict, normalize="tvn") -> dict:
    """Several per-cell feature tables (name -> table) joined as evaluate_combined joins two."""
    from cytogan_tf.combine import combine_well_profiles
    from cytogan_tf.evaluation import evaluate_table
    from cytogan_tf.profiling import aggregate_treatments, build_profiles

    wells = combine_well_profiles({name: build_profiles(cells, normalize=normalize)["wells_mean"]
                                   for name, cells in cell_tables.items()})
    return evaluate_table(aggregate_treatments(wells, "mean"))


def evaluate_cells(cells, normalize="tvn", columns=None) -> dict:
    """Per-cell features -> treatment profiles (global TVN) -> evaluate_table's result."""
    from cytogan_tf.evaluation import evaluate_table
    from cytogan_tf.metrics import metadata_columns
    from cytogan_tf.profiling import build_profiles

    if columns is not None:
        cells = cells[metadata_columns(cells) + list(columns)]
    cells = cells.loc[:, ~cells.columns.duplicated()]
    return evaluate_table(build_profiles(cells, normalize=normalize, tvn_scope="global")["treatments_mean"])


def _scores(r: dict) -> dict:
    return {"nsc": float(r["nsc"].accuracy), "nscb": float(r["nscb"].accuracy), "map": float(r["map"]),
            "chance": float(r["nsc"].chance_prior)}


def score_combined(handmade, encoded, normalize="tvn"):
    return _scores(evaluate_combined(handmade, encoded, normalize))


def score(cells, normalize="tvn", columns=None):
    return _scores(evaluate_cells(cells, normalize, columns))


# --------------------------------------------------------------------------- models


def model_config(variant: str, crop: int, steps: int | None):
    from cytogan_tf.config import load_config

    over = dict(VARIANTS[variant])
    # head_lr 0 unless the variant sets it: the configs' default rate changes no row.
    train_over = {"head_lr": 0.0, **over.pop("train", {})}
    cfg = load_config(over["arch"])
    if not over.pop("shipped", False):
        # Every variant names what it adds to the arch as first measured, so a later change
        # of a config's defaults changes no variant's meaning (configs/bigan.toml moved to
        # E's contrastive and morphology heads on 2026-12-07).
        cfg["model"].update(PINNED.get(over["arch"], {}))
    demo = load_config("demo")
    cfg["model"].update(demo["model"])
    cfg["model"].update(over, image_size=crop)
    cfg["train"].update({k: v for k, v in demo["train"].items()})
    cfg["train"].update(train_over)
    if steps:
        cfg["train"]["steps"] = steps
    return cfg


def train_variant(work, shards, variant, seed, cfg, curve_every):
    from cytogan_tf.training import train

    run = work / "runs" / f"{variant}-s{seed}-{shards.parent.name}"
    steps = int(cfg["train"]["steps"])
    cfg = json.loads(json.dumps(cfg))
    cfg["train"].update(checkpoint_every=curve_every, sample_every=steps, max_checkpoints=100)
    done = run / "run.json"
    if done.is_file() and json.loads(done.read_text()).get("step", 0) >= steps:
        return run, json.loads((run / "bench_train.json").read_text())
    t0 = time.perf_counter()
    res = train(cfg, shards, run, seed=seed, resume=run.exists(), verbose=0)
    info = {"train_seconds": time.perf_counter() - t0, "images_per_s": res.images_per_second,
            "precision": res.precision}
    (run / "bench_train.json").write_text(json.dumps(info))
    return run, info


def restore(run: Path, readout: str, checkpoint: str | None = None, views: str = "single"):
    """The run's GAN (float32) at `checkpoint` (default: latest), read out as `readout`
    over `views`."""
    import tensorflow as tf

    from cytogan_tf.training import _make_checkpoint, load_run

    loaded = load_run(run, readout=readout, views=views)
    if checkpoint is not None:
        step = tf.Variable(0, dtype=tf.int64)
        _make_checkpoint(loaded.gan, step, None).restore(checkpoint).expect_partial()
        if loaded.gan.weight_average is not None:  # the checkpoint's averaged weights
            loaded.gan.weight_average.apply()
    return loaded.gan


def untrained(cfg, seed, readout, views="single"):
    from cytogan_tf.models import build_gan
    from cytogan_tf.precision import set_policy
    from cytogan_tf.training import _build_networks

    set_policy("float32")
    model = dict(cfg["model"], readout=readout, views=views)
    if model.get("weak_labels", "none") != "none":
        # The class head is built after D, so D's initial weights are the same without it.
        model["weak_labels"] = "none"
    gan = build_gan(model, seed=seed)
    _build_networks(gan)
    return gan


# --------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    out_path = work / "encoders.json"
    results = _read_results(out_path)
    done = {(r["preset"], r["variant"], r["seed"], r["features"]) for r in results["rows"]}

    def record(row):
        results["rows"] = _append_result(out_path, row)["rows"]
        print(f"{row['preset']:8s} {row['variant']:12s} s{row['seed']} {row['features']:28s} "
              f"NSC {row['nsc']:.3f} NSCB {row['nscb']:.3f} mAP {row['map']:.3f}", flush=True)

    from cytogan_tf.config import load_config

    crop = int(load_config("demo")["prepare"]["crop_size"])
    for preset in args.presets.split(","):
        shards = make_shards(work, preset, crop, args.data_seed, args.workers)
        hand = handmade_cells(work, preset, shards, args.workers)
        for label, cols in (("handmade", None), ("handmade size+intensity", SIZE_INTENSITY)):
            if (preset, "-", -1, label) not in done:
                record({"preset": preset, "variant": "-", "seed": -1, "features": label,
                        **score(hand, args.normalize, cols)})
        for seed in [int(s) for s in args.seeds.split(",")]:
            for variant in args.variants.split(","):
                cfg = model_config(variant, crop, args.steps)
                run, info = train_variant(work, shards, variant, seed, cfg, args.curve_every)
                trial = Trial(work, preset, variant, seed, cfg, run, info, shards, hand, crop,
                              args.normalize)
                for readout in READOUTS:
                    for views in VIEWS:
                        for kind in ("trained", "untrained"):
                            evaluate_encoder(trial, kind, readout, views, done, record)
    summarize(results["rows"])


def _read_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"rows": []}


def _append_result(path: Path, row: dict) -> dict:
    """Add `row` to the results file under a lock, re-reading it first: benchmarks run
    side by side in one workdir would otherwise each write back only their own rows."""
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = _read_results(path)
        results["rows"].append(row)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(path)  # atomic: an interrupted write leaves the previous file
    return results


@dataclasses.dataclass
class Trial:
    """One trained run on one plate set, and what its encoders are scored against."""

    work: Path
    preset: str
    variant: str
    seed: int
    cfg: dict
    run: Path
    info: dict  # training speed and precision (bench_train.json)
    shards: Path
    hand: object  # the plate set's hand-made per-cell table
    crop: int
    normalize: str


def evaluate_encoder(trial: Trial, kind, readout, views, done, record):
    """One encoder's row and its hand-made (+) encoder row; the NSC curve for the
    readout and views the variant's config names."""
    t = trial
    key = f"{kind} {readout}" + ("" if views == "single" else f" {views}")
    if (t.preset, t.variant, t.seed, key) in done:
        return
    gan = (restore(t.run, readout, views=views) if kind == "trained"
           else untrained(t.cfg, t.seed, readout, views))
    enc = embed_cells(t.shards, gan.encoder, t.crop, "enc")
    path = table_path(t.work, t.preset, t.variant, t.seed, key)
    path.parent.mkdir(exist_ok=True)  # per-cell embeddings, for analyses after the run
    enc.to_parquet(path)
    ids = {"preset": t.preset, "variant": t.variant, "seed": t.seed}
    row = {**ids, "features": key, "dim": int(gan.encoder.outputs[0].shape[-1]), **score(enc, t.normalize)}
    model = t.cfg["model"]
    if kind == "trained":
        row.update(t.info)
        if readout == model.get("readout", "hidden") and views == model.get("views", "single"):
            row["curve"] = nsc_curve(t.run, readout, t.shards, t.crop, t.normalize, views)
    record(row)
    record({**ids, "features": f"handmade + {key}", **score_combined(t.hand, enc, t.normalize)})


def nsc_curve(run: Path, readout: str, shards: Path, crop: int, normalize: str,
              views: str = "single") -> list:
    import tensorflow as tf

    ckpts = tf.train.get_checkpoint_state(str(run / "checkpoints"))
    points = []
    for path in (ckpts.all_model_checkpoint_paths if ckpts else [])[:-1]:  # the last is the final row
        gan = restore(run, readout, path, views=views)
        step = int(tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE"))
        points.append([step, score(embed_cells(shards, gan.encoder, crop, "enc"), normalize)["nsc"]])
    return points


def summarize(rows):
    """Mean and standard deviation over seeds, one line per (preset, variant, features)."""
    from collections import defaultdict

    groups = defaultdict(list)
    for r in rows:
        groups[(r["preset"], r["variant"], r["features"])].append(r)
    print(f"\n{'preset':8s} {'variant':12s} {'features':32s} {'n':>2s} {'NSC':>13s} {'NSCB':>13s} {'mAP':>13s}")
    for (preset, variant, feats), rs in sorted(groups.items()):
        cells = []
        for k in ("nsc", "nscb", "map"):
            v = np.array([r[k] for r in rs])
            cells.append(f"{v.mean():.3f}+-{v.std():.3f}")
        print(f"{preset:8s} {variant:12s} {feats:32s} {len(rs):>2d} " + " ".join(f"{c:>13s}" for c in cells))


if __name__ == "__main__":
    main()
