"""GAN losses against values computed by hand on small tensors."""

import numpy as np
import pytest
import tensorflow as tf

from cytogan_tf import losses


def _t(x, dtype=tf.float32):
    return tf.constant(np.asarray(x, dtype=np.float32), dtype=dtype)


def test_dcgan_losses_match_cross_entropy():
    real, fake = [2.0, -1.0], [0.5, -3.0]
    sig = lambda x: 1 / (1 + np.exp(-np.asarray(x)))
    want_d = -np.mean(np.log(sig(real))) - np.mean(np.log(1 - sig(fake)))
    want_g = -np.mean(np.log(sig(fake)))
    assert losses.dcgan_discriminator_loss(_t(real), _t(fake)).numpy() == pytest.approx(want_d, rel=1e-5)
    assert losses.dcgan_generator_loss(_t(fake)).numpy() == pytest.approx(want_g, rel=1e-5)


def test_lsgan_losses():
    # D: 0.5*mean((r-1)^2) + 0.5*mean(f^2) = 0.5*(0+4)/2 + 0.5*(0.25+1)/2
    assert losses.lsgan_discriminator_loss(_t([1.0, 3.0]), _t([0.5, -1.0])).numpy() == pytest.approx(1.3125)
    # G: 0.5*mean((f-1)^2) = 0.5*(0.25+4)/2
    assert losses.lsgan_generator_loss(_t([0.5, -1.0])).numpy() == pytest.approx(1.0625)


def test_wasserstein_losses():
    assert losses.wasserstein_discriminator_loss(_t([1.0, 3.0]), _t([0.0, -2.0])).numpy() == pytest.approx(-3.0)
    assert losses.wasserstein_generator_loss(_t([0.0, -2.0])).numpy() == pytest.approx(1.0)


def test_losses_are_float32_for_bfloat16_inputs():
    out = losses.lsgan_discriminator_loss(_t([1.0, 3.0], tf.bfloat16), _t([0.5, -1.0], tf.bfloat16))
    assert out.dtype == tf.float32
    assert out.numpy() == pytest.approx(1.3125)


def test_gradient_penalty_of_linear_critic():
    # critic(x) = sum(w * x): gradient is w everywhere, so GP = (||w|| - 1)^2 for any alpha.
    w = tf.constant(np.full((1, 2, 2, 3), 0.5, np.float32))  # ||w|| = sqrt(12 * 0.25) = sqrt(3)
    critic = lambda x, training=True: tf.reduce_sum(x * w, axis=[1, 2, 3])
    rng = np.random.default_rng(0)
    real = _t(rng.normal(size=(4, 2, 2, 3)))
    fake = _t(rng.normal(size=(4, 2, 2, 3)))
    alpha = _t(rng.uniform(size=(4, 1, 1, 1)))
    gp = losses.gradient_penalty(critic, real, fake, alpha).numpy()
    assert gp == pytest.approx((np.sqrt(3.0) - 1.0) ** 2, rel=1e-5)


def test_gradient_penalty_zero_for_unit_norm_and_finite_for_flat_critic():
    w = np.zeros((1, 2, 2, 3), np.float32)
    w[0, 0, 0, 0] = 1.0  # unit-norm gradient -> zero penalty
    unit = lambda x, training=True: tf.reduce_sum(x * w, axis=[1, 2, 3])
    x = _t(np.ones((2, 2, 2, 3)))
    alpha = _t(np.full((2, 1, 1, 1), 0.3))
    assert losses.gradient_penalty(unit, x, -x, alpha).numpy() == pytest.approx(0.0, abs=1e-6)
    # a constant critic has zero gradient: the epsilon keeps the penalty's gradient finite
    flat = tf.Variable(1.0)
    const = lambda x, training=True: flat * tf.reduce_sum(x * 0.0, axis=[1, 2, 3])
    with tf.GradientTape() as tape:
        gp = losses.gradient_penalty(const, x, -x, alpha)
    grad = tape.gradient(gp, flat)
    assert gp.numpy() == pytest.approx(1.0, abs=1e-4)
    assert grad is None or np.isfinite(grad.numpy())


def test_loss_scaled_input_gradient_survives_float16():
    # A float16 critic whose input gradient (1e-4 * 1e-4 = 1e-8) is below float16's
    # smallest subnormal (6e-8): unscaled it underflows to 0, which would make the
    # penalty's gradient vanish under mixed_float16; scaled by 2^15 it survives.
    a, b = tf.constant(1e-4, tf.float16), tf.constant(1e-4, tf.float16)
    critic = lambda x, training=True: tf.cast(
        tf.reduce_sum(tf.cast(x, tf.float16) * a * b, axis=[1, 2, 3]), tf.float32)
    x = _t(np.random.default_rng(0).normal(size=(3, 2, 2, 3)))
    unscaled = losses.critic_input_gradients(critic, x).numpy()
    scaled = losses.critic_input_gradients(critic, x, inner_scale=2.0 ** 15).numpy()
    assert unscaled.dtype == scaled.dtype == np.float32
    assert np.all(unscaled == 0.0)
    np.testing.assert_allclose(scaled, 1e-8, rtol=2e-3)
    # the penalty accepts the same scale, and an overflowing scale shows up as non-finite
    # (the outer LossScaleOptimizer then skips the step and halves the scale)
    alpha = _t(np.full((3, 1, 1, 1), 0.5))
    assert np.isfinite(losses.gradient_penalty(critic, x, -x, alpha, inner_scale=2.0 ** 15).numpy())
    big = tf.constant(2.0 ** 40)  # the scaled upstream gradient exceeds float16's 65504
    critic_big = lambda x, training=True: tf.cast(
        tf.reduce_sum(tf.cast(x, tf.float16) * tf.constant(1.0, tf.float16), axis=[1, 2, 3]),
        tf.float32)
    assert not np.isfinite(losses.gradient_penalty(critic_big, x, -x, alpha, inner_scale=big).numpy())


def test_began_terms():
    x = _t(np.zeros((2, 2, 2, 1)))
    r = _t(np.full((2, 2, 2, 1), 0.5))
    l_real = losses.began_reconstruction_loss(x, r).numpy()
    assert l_real == pytest.approx(0.5)
    assert losses.began_discriminator_loss(0.5, 0.2, 0.25).numpy() == pytest.approx(0.45)
    assert losses.began_generator_loss(0.2).numpy() == pytest.approx(0.2)
    # k + lambda * (gamma * L(x) - L(G(z))) = 0.1 + 0.01 * (0.25 - 0.2)
    assert losses.began_k_update(0.1, 0.5, 0.2, 0.5, 0.01).numpy() == pytest.approx(0.1005)
    assert losses.began_k_update(0.0, 0.1, 5.0, 0.5, 1.0).numpy() == 0.0  # clipped at 0
    assert losses.began_k_update(0.9, 5.0, 0.0, 0.5, 1.0).numpy() == 1.0  # clipped at 1
    # M = L(x) + |gamma L(x) - L(G(z))| = 0.5 + |0.25 - 0.4|
    assert losses.began_convergence(0.5, 0.4, 0.5).numpy() == pytest.approx(0.65)
