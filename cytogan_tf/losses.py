"""GAN losses as pure functions of logits / critic values / reconstructions.

One signature style for all of them (TF-GAN-like): discriminator losses take
`(real_*, fake_*)`, generator losses take `(fake_*)`. Everything is cast to float32
first, so a bfloat16/float16 network never reduces a loss in low precision.
Each loss is a mean over the (per-replica) batch; the model divides by the replica
count before taking gradients so the sum over replicas is the global-batch mean.
"""

from __future__ import annotations

import tensorflow as tf


def _f32(x):
    return tf.cast(x, tf.float32)


# --- DCGAN (Goodfellow et al.; non-saturating generator) -------------------------------
def dcgan_discriminator_loss(real_logits, fake_logits):
    """Sigmoid cross-entropy: real -> 1, fake -> 0. softplus(-x) == -log(sigmoid(x))."""
    real_logits, fake_logits = _f32(real_logits), _f32(fake_logits)
    return tf.reduce_mean(tf.nn.softplus(-real_logits)) + tf.reduce_mean(
        tf.nn.softplus(fake_logits)
    )


def dcgan_generator_loss(fake_logits):
    """Non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z)))."""
    return tf.reduce_mean(tf.nn.softplus(-_f32(fake_logits)))


# --- LSGAN (Mao et al.; a=0, b=c=1, with the paper's 1/2 factors) ---------------------
def lsgan_discriminator_loss(real_logits, fake_logits):
    real_logits, fake_logits = _f32(real_logits), _f32(fake_logits)
    return 0.5 * tf.reduce_mean(tf.square(real_logits - 1.0)) + 0.5 * tf.reduce_mean(
        tf.square(fake_logits)
    )


def lsgan_generator_loss(fake_logits):
    return 0.5 * tf.reduce_mean(tf.square(_f32(fake_logits) - 1.0))


# --- WGAN-GP (Gulrajani et al.) ---------------------------------------------------------
def wasserstein_discriminator_loss(real_scores, fake_scores):
    """Critic minimises E[D(fake)] - E[D(real)] (the negated Wasserstein estimate)."""
    return tf.reduce_mean(_f32(fake_scores)) - tf.reduce_mean(_f32(real_scores))


def wasserstein_generator_loss(fake_scores):
    return -tf.reduce_mean(_f32(fake_scores))


def gradient_penalty(critic, real, fake, alpha, epsilon=1e-10, inner_scale=None):
    """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = real + alpha * (fake - real).

    `alpha` has shape [B, 1, 1, 1] (uniform in [0, 1], drawn by the caller so the
    model's seed generator controls it). `epsilon` sits inside the square root so the
    penalty's own gradient stays finite where the critic's gradient vanishes. The
    critic must treat samples independently (no batch norm) for this to be per-sample.

    `inner_scale` (mixed_float16): the critic's input gradient is itself a float16
    backward pass and underflows like any other, so the scores are multiplied by this
    scale before differentiating and the gradient divided by it in float32. A scale
    that overflows float16 makes the penalty non-finite.
    """
    real, fake, alpha = _f32(real), _f32(fake), _f32(alpha)
    grads = critic_input_gradients(critic, real + alpha * (fake - real), inner_scale)
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=tf.range(1, tf.rank(grads))) + epsilon)
    return tf.reduce_mean(tf.square(norms - 1.0))


def critic_input_gradients(critic, x, inner_scale=None):
    """d sum(D(x)) / dx in float32, per sample for a critic without batch coupling;
    under `inner_scale` the backward pass runs on scaled scores (see gradient_penalty)."""
    x = _f32(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = _f32(critic(x, training=True))
        if inner_scale is not None:
            scores = scores * _f32(inner_scale)
    grads = _f32(tape.gradient(scores, x))
    if inner_scale is not None:
        grads = grads / _f32(inner_scale)
    return grads


# --- BEGAN (Berthelot et al.; autoencoder discriminator) ------------------------------
def began_reconstruction_loss(images, reconstructions):
    """L(x) = mean |x - D(x)| (L1 autoencoder loss, averaged over pixels and batch)."""
    return tf.reduce_mean(tf.abs(_f32(images) - _f32(reconstructions)))


def began_discriminator_loss(real_recon_loss, fake_recon_loss, k):
    """L_D = L(x) - k_t * L(G(z))."""
    return _f32(real_recon_loss) - _f32(k) * _f32(fake_recon_loss)


def began_generator_loss(fake_recon_loss):
    """L_G = L(G(z))."""
    return _f32(fake_recon_loss)


def began_k_update(k, real_recon_loss, fake_recon_loss, gamma, lambda_k):
    """k_{t+1} = clip(k_t + lambda_k * (gamma * L(x) - L(G(z))), 0, 1)."""
    k = _f32(k) + lambda_k * (gamma * _f32(real_recon_loss) - _f32(fake_recon_loss))
    return tf.clip_by_value(k, 0.0, 1.0)


def began_convergence(real_recon_loss, fake_recon_loss, gamma):
    """M = L(x) + |gamma * L(x) - L(G(z))|: falls as training converges."""
    real_recon_loss, fake_recon_loss = _f32(real_recon_loss), _f32(fake_recon_loss)
    return real_recon_loss + tf.abs(gamma * real_recon_loss - fake_recon_loss)


# --- ALICE (Li et al. 2017): BiGAN/ALI with an explicit cycle term -----------------
# The cycle term is mean |x - G(E(x))|, the same L1 as BEGAN's autoencoder loss: it makes a
# bidirectional GAN's encoder keep what identifies a cell, not only what D checks.
cycle_reconstruction_loss = began_reconstruction_loss


# --- contrastive self-supervision (SimCLR's NT-Xent, as ContraD trains D with it) ------
def contrastive_loss(view_a, view_b, temperature=0.2):
    """NT-Xent over two views of one batch: row i of `view_a` must pick row i of
    `view_b` among the other 2B-2 projections (and vice versa). Cosine similarity."""
    a = tf.math.l2_normalize(_f32(view_a), axis=1)
    b = tf.math.l2_normalize(_f32(view_b), axis=1)
    z = tf.concat([a, b], axis=0)
    n = tf.shape(a)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits = logits - 1e9 * tf.eye(2 * n)  # a view is never its own positive
    targets = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))


# --- VICReg (Bardes et al. 2022): agreement of two views without negatives -----------
# Why beside NT-Xent: NT-Xent at a batch of 64 has 126 negatives and asks every pair of
# cells to be told apart (uniformity), which spends the projection on what differs most
# from cell to cell; VICReg needs no negatives, and its variance and covariance terms keep
# every dimension alive and decorrelated, the form TVN whitening and 1-NN profiles use.
def vicreg_loss(view_a, view_b, invariance=1.0, variance=1.0, covariance=0.04, eps=1e-4):
    """Mean squared distance between the views' projections, plus a hinge keeping each
    dimension's standard deviation (per view, over the batch) at 1 or more, plus the mean
    squared off-diagonal covariance. The paper's weights 25 : 25 : 1, divided by 25 so
    the loss sits near NT-Xent's scale and `ssl_weight` means the same for both."""
    a, b = _f32(view_a), _f32(view_b)

    def spread(x):  # hinge on each dimension's standard deviation over the batch
        return tf.reduce_mean(tf.nn.relu(1.0 - tf.sqrt(tf.math.reduce_variance(x, axis=0) + eps)))

    def cross_talk(x):  # squared off-diagonal covariances, per dimension
        x = x - tf.reduce_mean(x, axis=0)
        n = tf.cast(tf.shape(x)[0], tf.float32)
        cov = tf.matmul(x, x, transpose_a=True) / (n - 1.0)
        off = cov - tf.linalg.diag(tf.linalg.diag_part(cov))
        return tf.reduce_sum(tf.square(off)) / tf.cast(tf.shape(x)[1], tf.float32)

    return (invariance * tf.reduce_mean(tf.square(a - b))
            + variance * (spread(a) + spread(b)) + covariance * (cross_talk(a) + cross_talk(b)))


SSL_OBJECTIVES = ("nt-xent", "vicreg")


def view_agreement_loss(objective, view_a, view_b, temperature=0.2):
    """The self-supervised loss `objective` names (SSL_OBJECTIVES) on two views'
    projections; `temperature` is NT-Xent's alone."""
    if objective == "vicreg":
        return vicreg_loss(view_a, view_b)
    if objective == "nt-xent":
        return contrastive_loss(view_a, view_b, temperature)
    raise ValueError(f"unknown ssl_objective {objective!r}; valid: {', '.join(SSL_OBJECTIVES)}")


def classification_loss(logits, labels):
    """Mean softmax cross-entropy of integer class `labels` (weak treatment labels)."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.cast(labels, tf.int32), _f32(logits)))


# --- weak labels at the level of a profile ----------------------------------------------
# Why sets, not cells: a profile is the mean of a well's cells, and one cell barely says
# which treatment it got (a linear class head on ~35 cells per treatment stays near
# chance, docs/learned-encoders.md), while the mean of a few cells does. Written here
# because no library ships a contrastive loss over set means with a class mask.
def _as_runs(values, labels, group_size):
    """A batch in runs of `group_size` cells of one class (data.pipeline's group_size
    order) as float32 [runs, group_size, dim] and each run's label [runs]."""
    values = _f32(values)
    runs = tf.reshape(values, [-1, group_size, tf.shape(values)[-1]])
    return runs, tf.reshape(labels, [-1, group_size])[:, 0]


SET_TEMPERATURE = 0.2  # the set loss's default softmax temperature (model.weak_temperature)
RUN_GROUP = 8  # cells per run of one class, the run losses' default (model.weak_group)


def _cancel_nearest(logits, candidates, n):
    """`logits` with each row's `n` largest entries among `candidates` (bool, same shape)
    set to -1e9: left out of the softmax's denominator, not pushed away."""
    if not n:
        return logits
    k = tf.minimum(int(n), tf.shape(logits)[1])
    ranked = tf.stop_gradient(tf.where(candidates, logits, tf.fill(tf.shape(logits), -1e9)))
    kth = tf.math.top_k(ranked, k=k).values[:, -1:]
    drop = tf.logical_and(candidates, ranked >= kth)
    return tf.where(drop, tf.fill(tf.shape(logits), -1e9), logits)


def set_contrast_loss(projections, labels, group_size, temperature=SET_TEMPERATURE, cancel=0):
    """NT-Xent between the mean projections of two halves of each run of `group_size`
    cells of one class (the batch as data.pipeline's group_size orders it): each half's
    mean must pick its other half among the batch's half-means. Halves of other runs of
    the same class are left out of the denominator, not pushed away; so are, with
    `cancel`, each half's `cancel` most similar half-means of other classes (false-negative
    cancellation: the nearest other treatments are the likeliest to share its mechanism,
    which profiling wants close, and the labels cannot say which they are)."""
    runs, run_labels = _as_runs(projections, labels, group_size)
    half = group_size // 2
    a = tf.reduce_mean(runs[:, :half], axis=1)
    b = tf.reduce_mean(runs[:, half:2 * half], axis=1)
    z = tf.math.l2_normalize(tf.concat([a, b], axis=0), axis=1)
    n = tf.shape(a)[0]
    both = tf.concat([run_labels, run_labels], axis=0)
    targets = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    same_class = tf.equal(both[:, None], both[None, :])
    is_target = tf.equal(tf.range(2 * n)[None, :], targets[:, None])
    left_out = tf.logical_and(same_class, tf.logical_not(is_target))  # self included
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits = tf.where(left_out, tf.fill(tf.shape(logits), -1e9), logits)
    logits = _cancel_nearest(logits, tf.logical_not(same_class), cancel)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))


def set_classification_loss(logits, labels, group_size, cancel=0):
    """Cross-entropy of each run's mean class logits (runs of `group_size` cells of one
    class, as data.pipeline's group_size orders the batch) against the run's class: the
    run's profile, not each cell, must name its treatment among all of them. Why: one
    cell says little about its treatment (the per-cell class loss barely leaves chance),
    and the set loss's contrast sees only the batch's few other runs; this one is scored
    against every class at each step. `cancel` leaves each run's `cancel` highest other
    classes out of the softmax (set_contrast_loss's false-negative cancellation)."""
    runs, run_labels = _as_runs(logits, labels, group_size)
    mean_logits = tf.reduce_mean(runs, axis=1)
    others = tf.logical_not(tf.one_hot(run_labels, tf.shape(mean_logits)[1], on_value=True,
                                       off_value=False))
    return classification_loss(_cancel_nearest(mean_logits, others, cancel), run_labels)


# The weak-label objectives scored over runs of one class, by `model.weak_objective`
# (models.class_head.GROUPED_OBJECTIVES is read from here).
RUN_LOSSES = {"set": set_contrast_loss, "set_class": set_classification_loss}


def grouped_weak_loss(objective, head_out, labels, group_size, cancel=0,
                      temperature=SET_TEMPERATURE):
    """The weak-label loss of a batch in runs of one class: `set` (contrast of half-run
    means, at `temperature`) or `set_class` (each run's mean logits against its class,
    whose head learns its own scale); `cancel` nearest other classes left out of each
    softmax."""
    if objective not in RUN_LOSSES:
        raise ValueError(f"{objective!r} is not a weak objective over runs of one class")
    options = {"cancel": cancel, **({"temperature": temperature} if objective == "set" else {})}
    return RUN_LOSSES[objective](head_out, labels, group_size, **options)


def regression_loss(predictions, targets):
    """Mean squared error (E's morphology head against a cell's standardized statistics)."""
    return tf.reduce_mean(tf.square(_f32(predictions) - _f32(targets)))
