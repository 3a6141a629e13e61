"""Seeded noise: spec §5 (items 54–60 of §8) and the Philox vectors of §5.7 (EXACT)."""

import numpy as np
import pytest
import torch

from retouch.sampling.rng import ImageRNG, PhiloxGenerator, slerp


def test_philox_matches_cuda_vectors():
    g = PhiloxGenerator(0)
    first = g.randn((3, 4))
    np.testing.assert_array_equal(first, np.array([
        [-0.9246624, -0.42534396, -2.6438458, 0.14518388],
        [-0.12086651, -0.5797257, -0.6228513, -0.32838714],
        [-1.074542, -0.3631441, -1.6710504, 2.265505]], dtype=np.float32))
    np.testing.assert_array_equal(g.randn((4,)), np.array([0.18082589, -0.5522627, 0.9238134, -0.73497033],
                                                          dtype=np.float32))
    # (the spec prints this one with 8 digits, which does not pin the last bit of 0.01401389)
    np.testing.assert_allclose(PhiloxGenerator(12345).randn((2, 3)), np.array(
        [[0.5786413, -0.5247555, -0.29190373], [0.01401389, -2.1647296, 0.27898726]], dtype=np.float32), rtol=1e-6)


@pytest.mark.parametrize("source", ["CPU", "GPU"])
def test_cpu_noise_is_a_fresh_generator_per_image(source):
    noise = ImageRNG((4, 8, 8), [0, 7], source=source).next()
    for i, seed in enumerate([0, 7]):
        expected = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(noise[i], expected)


@pytest.mark.parametrize("source", ["CPU", "NV"])
def test_noise_does_not_depend_on_batch_position(source):
    batch = ImageRNG((4, 6, 5), [11, 12, 13], source=source)
    singles = [ImageRNG((4, 6, 5), [s], source=source) for s in (11, 12, 13)]
    for _ in range(3):  # first draw and two later (ancestral) draws
        drawn = batch.next()
        for i, single in enumerate(singles):
            assert torch.equal(drawn[i], single.next()[0])


def test_variation_strength_zero_and_one():
    main = ImageRNG((4, 8, 8), [5], source="CPU").next()
    sub = ImageRNG((4, 8, 8), [99], source="CPU").next()
    at0 = ImageRNG((4, 8, 8), [5], subseeds=[99], subseed_strength=0.0, source="CPU").next()
    at1 = ImageRNG((4, 8, 8), [5], subseeds=[99], subseed_strength=1.0, source="CPU").next()
    assert torch.equal(at0, main)
    assert torch.allclose(at1, sub, atol=1e-5)
    half = ImageRNG((4, 8, 8), [5], subseeds=[99], subseed_strength=0.5, source="CPU").next()
    assert not torch.allclose(half, main) and not torch.allclose(half, sub)


def test_same_seed_and_subseed_take_the_linear_branch():
    for t in (0.2, 0.7):
        out = ImageRNG((4, 8, 8), [5], subseeds=[5], subseed_strength=t, source="CPU").next()
        main = ImageRNG((4, 8, 8), [5], source="CPU").next()
        assert torch.allclose(out, main * t + main * (1 - t), atol=1e-6)


def test_slerp_normalises_along_height():
    low, high = torch.randn(4, 6, 5), torch.randn(4, 6, 5)
    a, b = low[0, :, 0], high[0, :, 0]
    omega = torch.acos(torch.dot(a / a.norm(), b / b.norm()))
    expected = torch.sin(0.7 * omega) / torch.sin(omega) * a + torch.sin(0.3 * omega) / torch.sin(omega) * b
    assert torch.allclose(slerp(0.3, low, high)[0, :, 0], expected, atol=1e-5)


def test_seed_resize_same_size_is_unchanged_and_smaller_is_centred():
    plain = ImageRNG((4, 8, 8), [3], source="CPU").next()
    same = ImageRNG((4, 8, 8), [3], seed_resize_from_h=64, seed_resize_from_w=64, source="CPU").next()
    assert torch.equal(plain, same)
    small = ImageRNG((4, 4, 6), [3], source="CPU").next()[0]
    resized = ImageRNG((4, 8, 8), [3], seed_resize_from_h=32, seed_resize_from_w=48, source="CPU").next()[0]
    assert torch.equal(resized[:, 2:6, 1:7], small)
    # outside the centred block: the ordinary noise of the seed at the new size
    assert torch.equal(resized[:, 0], plain[0, :, 0])


def test_ensd_changes_only_later_draws():
    a = ImageRNG((4, 8, 8), [3], source="CPU")
    b = ImageRNG((4, 8, 8), [3], source="CPU", eta_noise_seed_delta=31337)
    assert torch.equal(a.next(), b.next())
    later = b.next()
    assert not torch.equal(a.next(), later)
    assert torch.equal(later[0], torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(3 + 31337)))
