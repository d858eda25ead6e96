"""The Cox loss against lifelines (Efron) and a direct computation (Breslow); the C-index."""

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index

from nic_ray.train import c_index, cox_loss


def tied_survival_data(n=120, p=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    hazard = np.exp(x @ np.array([0.8, -0.5, 0.3][:p]))
    time = np.ceil(rng.exponential(1 / hazard) * 4)  # rounded: many tied times
    event = rng.random(n) < 0.7
    return x, time, event


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_efron_equals_lifelines(seed):
    x, time, event = tied_survival_data(seed=seed)
    assert len(np.unique(time[event])) < event.sum()  # ties really present
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(time=time, event=event.astype(int))
    fitter = CoxPHFitter().fit(frame, duration_col="time", event_col="event")  # Efron ties
    risk = torch.tensor(x @ fitter.params_.values, dtype=torch.float32)
    loss = cox_loss(risk, torch.tensor(time), torch.tensor(event), ties="efron", reduction="sum")
    np.testing.assert_allclose(-loss.item(), fitter.log_likelihood_, rtol=1e-5)
    mean = cox_loss(risk, torch.tensor(time), torch.tensor(event))
    np.testing.assert_allclose(mean.item(), loss.item() / event.sum(), rtol=1e-6)


def breslow_direct(risk, time, event):
    total = 0.0
    for t in np.unique(time[event]):
        dead = (time == t) & event
        total += risk[dead].sum() - dead.sum() * np.log(np.exp(risk[time >= t]).sum())
    return total


def test_breslow_equals_direct_computation():
    x, time, event = tied_survival_data(seed=3)
    risk = x @ np.array([0.4, 0.1, -0.7])
    loss = cox_loss(torch.tensor(risk), torch.tensor(time), torch.tensor(event), ties="breslow", reduction="sum")
    np.testing.assert_allclose(-loss.item(), breslow_direct(risk, time, event), rtol=1e-5)


def test_large_log_hazards_stay_finite_and_shift_invariant():
    x, time, event = tied_survival_data(seed=4)
    risk = torch.tensor(x[:, 0] * 3, dtype=torch.float32, requires_grad=True)
    base = cox_loss(risk, torch.tensor(time), torch.tensor(event))
    shifted = cox_loss(risk + 1000.0, torch.tensor(time), torch.tensor(event))  # exp(1000) overflows float32
    assert torch.isfinite(shifted) and abs(shifted.item() - base.item()) < 1e-3
    shifted.backward()
    assert torch.isfinite(risk.grad).all() and risk.grad.abs().sum() > 0


def test_no_events_gives_zero():
    loss = cox_loss(torch.randn(5, requires_grad=True), torch.arange(5.0), torch.zeros(5))
    assert loss.item() == 0.0


def test_c_index_sign_convention():
    rng = np.random.default_rng(5)
    time = rng.exponential(size=200)
    event = rng.random(200) < 0.8
    risk = -time + rng.normal(scale=0.3, size=200)  # higher risk, shorter life
    ours = c_index(time, risk, event)
    assert ours > 0.8
    assert ours == pytest.approx(concordance_index(time, -risk, event))
    assert ours == pytest.approx(1 - c_index(time, -risk, event), abs=1e-9)


def efron_float64(risk: torch.Tensor, time: np.ndarray, event: np.ndarray) -> torch.Tensor:
    """Minus the Efron log partial likelihood, written out time by time in float64 (exp of risks
    less their maximum: exact enough in float64 for spreads of hundreds)."""
    total = risk.new_zeros(())
    top = risk.max().detach()
    for t in np.unique(time[event]):
        dead = torch.from_numpy((time == t) & event)
        at_risk = torch.exp(risk[torch.from_numpy(time >= t)] - top).sum()
        dying = torch.exp(risk[dead] - top).sum()
        d = int(dead.sum())
        total = total + risk[dead].sum() - sum(torch.log(at_risk - k / d * dying) + top for k in range(d))
    return -total


@pytest.mark.parametrize("spread", [1.0, 30.0, 150.0, 400.0])
def test_loss_and_gradients_match_float64_at_any_spread_of_risks(spread):
    """Log-hazards that differ by far more than float32's exp range within a batch (a model that
    separates its training slides): finite, and equal to a float64 computation."""
    x, time, event = tied_survival_data(n=40, seed=6)
    # Separated: the longest-lived slides get the lowest risks, ~spread below the shortest-lived.
    risk64 = torch.tensor(-spread * (time - time.min()) / np.ptp(time) + x[:, 0], dtype=torch.float64)
    risk64.requires_grad_(True)
    expected = efron_float64(risk64, time, event)
    (grad64,) = torch.autograd.grad(expected, risk64)
    risk32 = risk64.detach().float().requires_grad_(True)
    loss = cox_loss(risk32, torch.tensor(time), torch.tensor(event), reduction="sum")
    (grad32,) = torch.autograd.grad(loss, risk32)
    assert torch.isfinite(loss) and torch.isfinite(grad32).all()
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(grad32.numpy(), grad64.numpy(), rtol=1e-4, atol=1e-5)


def _worker(rank: int, port: int, x: torch.Tensor, time: torch.Tensor, event: torch.Tensor, results) -> None:
    """One of two workers: its half of the batch, a linear model, DDP's averaging by hand."""
    import torch.distributed as dist

    from nic_ray.train.losses import step_loss

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    weights = torch.tensor([0.8, -0.5, 0.3], dtype=torch.float64, requires_grad=True)
    half = slice(rank * 8, rank * 8 + 8)
    target = torch.stack([time[half], event[half]], dim=1)
    loss = step_loss({"os": "survival"}, {"os": (x[half] @ weights)[:, None]}, {"os": target})
    loss.backward()
    dist.all_reduce(weights.grad)  # what DistributedDataParallel does: the mean over workers
    results[rank] = (loss.item(), (weights.grad / 2).tolist())
    dist.destroy_process_group()


def test_two_workers_share_one_risk_set():
    """16 slides over 2 workers, 8 each: both see the Cox loss of all 16 (not of their own 8),
    and the step's gradient is the one-worker gradient of the whole batch."""
    import socket

    import torch.multiprocessing as mp

    x, time, event = tied_survival_data(n=16, seed=7)
    x, time, event = torch.tensor(x), torch.tensor(time), torch.tensor(event.astype(float))
    weights = torch.tensor([0.8, -0.5, 0.3], dtype=torch.float64, requires_grad=True)
    one = cox_loss(x @ weights, time, event)
    one.backward()
    halves = [cox_loss(x[h] @ weights, time[h], event[h]).item() for h in (slice(0, 8), slice(8, 16))]
    assert min(abs(h - one.item()) for h in halves) > 1e-3  # a worker's own risk set would differ
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.get_context("spawn").Manager().dict()
    mp.spawn(_worker, args=(port, x, time, event, results), nprocs=2, join=True)
    for rank in (0, 1):
        loss, grad = results[rank]
        assert loss == pytest.approx(one.item(), rel=1e-6)
        np.testing.assert_allclose(grad, weights.grad.numpy(), rtol=1e-6)
