"""Losses for slide-level heads. The Cox loss is the negative log partial likelihood.

For a batch with log-hazards η, times t and events δ, at each distinct event time with d events
(set D) and risk set R = {j : t_j ≥ t}:

    Breslow: ℓ = Σ_D η_i − d · log Σ_R e^{η_j}
    Efron:   ℓ = Σ_D η_i − Σ_{l=0}^{d−1} log(Σ_R e^{η_j} − (l/d) · Σ_D e^{η_i})

The largest η is taken out before exponentiating, so log-hazards in the thousands stay finite
in float32. It equals lifelines' `CoxPHFitter` log-likelihood for the same linear predictor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cox_loss(
    risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, ties: str = "efron", reduction: str = "mean"
) -> torch.Tensor:
    """Negative Cox log partial likelihood of ``risk`` (log-hazard, higher = worse).

    ``reduction="mean"`` divides by the number of events (comparable across batch sizes);
    ``"sum"`` is minus lifelines' ``log_likelihood_``. A batch without events gives 0.

    >>> risk = torch.tensor([0.5, -0.2, 1.3, 0.0])
    >>> cox_loss(risk, torch.tensor([5.0, 8.0, 2.0, 8.0]), torch.tensor([1, 0, 1, 1]))
    tensor(0.6689)
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', not {ties!r}")
    risk = risk.reshape(-1).float()
    event = event.reshape(-1).bool()
    n_events = event.sum()
    if n_events == 0:
        return risk.sum() * 0.0
    shift = risk.max().detach()
    w = torch.exp(risk - shift)
    times, group = torch.unique(time.reshape(-1), return_inverse=True)  # ascending
    k = len(times)

    def per_group(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(k, dtype=values.dtype, device=values.device).index_add_(0, group, values)

    at_risk = per_group(w).flip(0).cumsum(0).flip(0)  # Σ e^{η} over t_j ≥ each time
    e = event.to(w.dtype)
    d = per_group(e)
    eta_events = per_group(risk * e)
    w_events = per_group(w * e)
    if ties == "breslow":
        log_terms = d * (torch.log(at_risk) + shift)
    else:
        steps = torch.arange(int(d.max().item()), device=w.device, dtype=w.dtype)
        frac = steps[None, :] / d.clamp(min=1)[:, None]  # l/d, for l < d
        inside = at_risk[:, None] - frac * w_events[:, None]
        used = steps[None, :] < d[:, None]
        log_terms = (torch.log(torch.where(used, inside, torch.ones_like(inside))) + shift) * used
        log_terms = log_terms.sum(1)
    loglik = (eta_events - log_terms)[d > 0].sum()
    return -loglik / n_events if reduction == "mean" else -loglik


def task_loss(task_type: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss of one head: BCE (binary), cross-entropy (multiclass), MSE (regression) or Cox.

    ``target`` is (N,) with NaN for a missing label, or (N, 2) time, event for survival. Slides
    without a label are left out; a batch without any still gives a (zero) loss tied to ``output``,
    so that every head takes part in each step of distributed training.

    >>> task_loss("binary", torch.tensor([[0.0], [2.0]]), torch.tensor([1.0, float("nan")]))
    tensor(0.6931)
    """
    known = ~torch.isnan(target).reshape(len(target), -1).any(dim=1)
    if not known.any():
        return output.sum() * 0.0
    output, target = output[known], target[known]
    if task_type == "survival":
        return cox_loss(output[:, 0], target[:, 0], target[:, 1])
    if task_type == "binary":
        return F.binary_cross_entropy_with_logits(output[:, 0], target.reshape(-1))
    if task_type == "multiclass":
        return F.cross_entropy(output, target.reshape(-1).long())
    return F.mse_loss(output[:, 0], target.reshape(-1))
