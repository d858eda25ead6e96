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
