"""RPG's training loss and sampling through the method interface (rpgen.methods.rpg)."""

import pytest
import torch

from rpgen.config import Config, apply_overrides
from rpgen.methods.diffusion import make_scheduler
from rpgen.methods import TrainingSet, get_method
from rpgen.methods.rpg import draw_rows
from rpgen.models.generator import Generator

RPG = get_method("rpg")


def tiny(prediction="sample"):
    cfg = apply_overrides(Config(), ["model.backbone=lstm", "model.d_model=16", "model.num_layers=1",
                                     "model.denoiser_channels=[1, 8, 1]", "model.kernel_size=3",
                                     f"diffusion.prediction={prediction}"])
    torch.manual_seed(0)
    positions = torch.stack([torch.zeros(6, dtype=torch.long), torch.arange(6)], dim=1)
    return cfg, Generator(cfg.model, positions=positions, num_states=2, token_size=4)


def training_loss(gen, tokens, states, cfg, *, diffusion_batch, rng):
    """The loss a training step computes: RPG's token loss on ``diffusion_batch`` random tokens."""
    b, l, s = tokens.shape  # noqa: E741 - the glossary's letters
    rows = draw_rows(b * l, diffusion_batch, rng=rng)
    data = TrainingSet(checkpoints=[], layout=None, conditions=None, config=cfg, device=torch.device("cpu"))
    return RPG.token_loss(gen, tokens.reshape(b * l, s)[rows], rows, states, data=data, batch=b, rng=rng)


def sample_tokens(gen, protos, scheduler, *, rng):
    return RPG.tokens(gen, protos, scheduler=scheduler, rng=rng)


def test_loss_ignores_nan_padding():
    cfg, gen = tiny()
    tokens = torch.randn(2, 6, 4)
    tokens[:, -1, 2:] = float("nan")
    g = torch.Generator().manual_seed(0)
    loss = training_loss(gen, tokens, torch.tensor([0, 1]), cfg, diffusion_batch=12, rng=g)
    assert torch.isfinite(loss)
    # Changing what sits under the padding changes nothing.
    tokens2 = tokens.clone()
    tokens2[torch.isnan(tokens2)] = 1e6
    tokens2[:, -1, 2:] = float("nan")
    loss2 = training_loss(gen, tokens2, torch.tensor([0, 1]), cfg, diffusion_batch=12,
                          rng=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(loss2.item())


@pytest.mark.parametrize("prediction", ["sample", "v_prediction"])
def test_fits_two_sequences_and_samples_them_back(prediction):
    """A tiny generator memorises two token sequences; sampling each state returns its own."""
    cfg, gen = tiny(prediction)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2, 6, 4, generator=g)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    states = torch.tensor([0, 1])
    for _ in range(400):
        loss = training_loss(gen, data, states, cfg, diffusion_batch=12, rng=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    scheduler = make_scheduler(cfg.diffusion, "ddim", 50)
    with torch.no_grad():
        protos = gen.prototypes(states).reshape(12, -1)
    out = sample_tokens(gen, protos, scheduler, rng=torch.Generator().manual_seed(1)).reshape(2, 6, 4)
    err_own = (out - data).abs().mean()
    err_swapped = (out - data.flip(0)).abs().mean()
    # v-prediction samples less precisely with this tiny denoiser, and how much depends on float
    # reduction order: the ratio measured 0.37 with 2 threads and 0.55-0.59 with 1.
    bound = 0.75 if prediction == "v_prediction" else 0.5
    assert err_own < bound * err_swapped, (err_own, err_swapped)


def test_epsilon_prediction_trains():
    """Epsilon prediction (the paper's) learns too, but this tiny denoiser cannot sample well with it."""
    cfg, gen = tiny("epsilon")
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2, 6, 4, generator=g)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    losses = []
    for _ in range(400):
        loss = training_loss(gen, data, torch.tensor([0, 1]), cfg, diffusion_batch=12, rng=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # The last 50 steps' mean over the first 50's measured 0.75 with 2 threads and 0.81 with 1; the old
    # check (the last 20 of 200 steps over the first 20) measured 0.66 and 0.98: too early with 1.
    assert sum(losses[-50:]) / 50 < 0.9 * sum(losses[:50]) / 50
