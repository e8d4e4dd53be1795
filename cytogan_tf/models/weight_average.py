"""An exponential moving average of the exported networks' weights (Polyak averaging).

Why: a GAN's weights never settle, as each step answers the other network's last move.
Encoders' profiling scores wander by 0.04-0.15 NSC between checkpoints 800 steps apart
(docs/learned-encoders.md), and a run's last checkpoint lands anywhere in that wander.
The average of the last few hundred steps' weights sits inside it; GAN generators' samples
gain from the same average (Karras et al. 2018; Yazici et al. 2019).

Written here rather than with Keras' optimizer EMA (`use_ema`) because that average lives
in the optimizer's state: export restores no optimizer, and under mixed float16 the
loss-scale wrapper nests it, so reading it back would depend on how the run was trained.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


class WeightAverage:
    """Averages of `variables`, updated by `update()` after each training step and copied
    over the live weights by `apply()` (export, profiling). A plain object, not a Keras
    one: its checkpoint entry (`checkpoint_state`) is named where the run's checkpoint is
    made, and it never joins the networks' own weights."""

    def __init__(self, variables, decay: float):
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"weight average decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        seen, live = set(), []
        for v in variables:  # networks share layers (BiGAN's E and its readout)
            if id(v) not in seen and "float" in str(v.dtype):
                seen.add(id(v))
                live.append(v)
        self.live = live
        # One value on every replica (the weights are mirrored), so the first replica's
        # assignment is the one kept.
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=agg,
                                   name="weight_average_updates")
        self.averages = [tf.Variable(tf.convert_to_tensor(v), trainable=False, aggregation=agg,
                                     name="weight_average")
                         for v in live]

    def update(self):
        """Move each average toward its live weight (inside the training step)."""
        # The plain mean of the steps so far until there are 1 / (1 - decay) of them: the
        # first (random) weights then weigh no more than any other step's.
        t = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(self.decay, t / (t + 1.0))
        for average, v in zip(self.averages, self.live):
            average.assign_sub((1.0 - decay) * (average - tf.convert_to_tensor(v)))
        self.updates.assign_add(1)

    def apply(self):
        """Copy the averages over the live weights (after restoring a checkpoint)."""
        for average, v in zip(self.averages, self.live):
            v.assign(average)

    @contextlib.contextmanager
    def applied(self):
        """The averages in place of the live weights for the block's duration (sample grids
        during training show what export will write)."""
        kept = [tf.identity(tf.convert_to_tensor(v)) for v in self.live]
        self.apply()
        try:
            yield
        finally:
            for v, value in zip(self.live, kept):
                v.assign(value)

    def checkpoint_state(self) -> dict:
        return {"updates": self.updates, "averages": list(self.averages)}
