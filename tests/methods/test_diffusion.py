"""The shared diffusion pieces: schedule, noised inputs and targets, sampler checks."""

import pytest
import torch

from rpgen.config import Config, DiffusionConfig
from rpgen.methods.diffusion import alphas_cumprod, make_scheduler, noised, sample_loop
from rpgen.errors import RpgenError


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_schedulers_share_the_training_schedule(sampler):
    cfg = Config().diffusion
    scheduler = make_scheduler(cfg, sampler, 10)
    torch.testing.assert_close(scheduler.alphas_cumprod, alphas_cumprod(cfg))
    assert len(scheduler.timesteps) == 10


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_noised_targets_recover_x0(prediction):
    """From the noisy input and the target of each prediction type, x0 comes back exactly."""
    cfg = DiffusionConfig(prediction=prediction)
    x0 = torch.randn(5, 3, 4)  # any sample shape
    noisy, t, target = noised(x0, cfg, rng=torch.Generator().manual_seed(0))
    ab = alphas_cumprod(cfg)[t].view(5, 1, 1)
    if prediction == "epsilon":
        x0_hat = (noisy - (1 - ab).sqrt() * target) / ab.sqrt()
    elif prediction == "sample":
        x0_hat = target
    else:
        x0_hat = ab.sqrt() * noisy - (1 - ab).sqrt() * target
    torch.testing.assert_close(x0_hat, x0, rtol=1e-4, atol=1e-4)
    again = noised(x0, cfg, rng=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((noisy, t, target), again))


@pytest.mark.parametrize("sampler, steps, needle", [("ddim", 0, "--steps 0"), ("ddim", 5000, "--steps 5000"),
                                                     ("euler", 10, "--sampler 'euler'")])
def test_scheduler_refuses_what_the_schedule_cannot_do(sampler, steps, needle):
    with pytest.raises(RpgenError, match=needle):
        make_scheduler(Config().diffusion, sampler, steps)


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_temperature_scales_the_starting_noise(sampler):
    """The loop starts from N(0, temperature^2); at 0 every seed gives the same sample."""
    cfg = Config().diffusion
    inputs = []

    def denoise(x, t):  # an x0 prediction that follows its input
        inputs.append(x.clone())
        return 0.5 * x

    samples = {}
    for temperature in (1.0, 0.25, 0.0):
        for seed in (0, 1):
            inputs.clear()
            scheduler = make_scheduler(cfg, sampler, 4, temperature)
            samples[temperature, seed] = sample_loop(denoise, (64, 8), scheduler,
                                                     rng=torch.Generator().manual_seed(seed), device="cpu")
            start = torch.randn((64, 8), generator=torch.Generator().manual_seed(seed)) * temperature
            torch.testing.assert_close(inputs[0], start)
    assert torch.equal(samples[0.0, 0], samples[0.0, 1])
    assert not torch.equal(samples[1.0, 0], samples[1.0, 1])


@pytest.mark.parametrize("sampler, temperature, needle", [
    ("ddpm", 0.5, "needs --sampler ddim or dpm"), ("ddim", -1.0, "--temperature -1.0: must be a finite number >= 0"),
    ("dpm", float("inf"), "--temperature inf: must be a finite"),
])
def test_temperature_is_refused_where_it_cannot_work(sampler, temperature, needle):
    with pytest.raises(RpgenError, match=needle):
        make_scheduler(Config().diffusion, sampler, 10, temperature)
