import numpy as np
import pytest

from cytogan_tf.latent import interpolate, lerp, sample_latent, slerp, vector_arithmetic


def test_slerp_endpoints_equal_inputs():
    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal(16), rng.standard_normal(16)
    np.testing.assert_allclose(slerp(z0, z1, 0.0), z0, atol=1e-6)
    np.testing.assert_allclose(slerp(z0, z1, 1.0), z1, atol=1e-6)
    path = interpolate(z0, z1, 7)
    assert path.shape == (7, 16) and path.dtype == np.float32
    np.testing.assert_allclose(path[0], z0, atol=1e-6)
    np.testing.assert_allclose(path[-1], z1, atol=1e-6)


def test_slerp_keeps_equal_norms_on_the_sphere_while_lerp_cuts_inside():
    rng = np.random.default_rng(1)
    z0, z1 = rng.standard_normal(100), rng.standard_normal(100)
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)
    r = np.linalg.norm(z0)
    norms = np.linalg.norm(interpolate(z0, z1, 11), axis=1)
    np.testing.assert_allclose(norms, r, rtol=1e-5)
    # the straight line through the interior is markedly shorter in the middle
    assert np.linalg.norm(lerp(z0, z1, 0.5)) < 0.9 * r


def test_slerp_norm_between_endpoint_norms_and_direction_on_the_arc():
    z0 = np.array([2.0, 0.0])
    z1 = np.array([0.0, 4.0])
    mid = slerp(z0, z1, 0.5)
    assert 2.0 <= np.linalg.norm(mid) <= 4.0
    # halfway along the quarter circle: 45 degrees
    np.testing.assert_allclose(mid / np.linalg.norm(mid), [np.sqrt(0.5)] * 2, atol=1e-6)


def test_slerp_parallel_vectors_fall_back_to_lerp():
    z0 = np.array([1.0, 2.0, 3.0])
    out = slerp(z0, 2 * z0, np.array([0.0, 0.5, 1.0]))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[1], 1.5 * z0, rtol=1e-6)


def test_slerp_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        slerp(np.zeros(3), np.zeros(4), 0.5)
    with pytest.raises(ValueError):
        interpolate(np.ones(3), np.ones(3), 1)


def test_vector_arithmetic_on_known_vectors():
    a = np.array([[1.0, 0.0, 0.0], [3.0, 0.0, 0.0]])   # mean [2, 0, 0]
    b = np.array([0.0, 1.0, 0.0])
    c = np.array([[0.0, 0.0, 1.0], [0.0, 2.0, 3.0]])   # mean [0, 1, 2]
    np.testing.assert_allclose(vector_arithmetic(a, b, c), [2.0, 0.0, 2.0])
    with pytest.raises(ValueError):
        vector_arithmetic(np.zeros((2, 3)), np.zeros(4), np.zeros(3))


def test_sample_latent_reproducible_and_distributed():
    a = sample_latent(2000, 8, seed=3)
    np.testing.assert_array_equal(a, sample_latent(2000, 8, seed=3))
    assert not np.array_equal(a, sample_latent(2000, 8, seed=4))
    assert abs(a.mean()) < 0.05 and abs(a.std() - 1.0) < 0.05
    u = sample_latent(100, 4, seed=0, distribution="uniform")
    assert u.min() >= -1 and u.max() <= 1
