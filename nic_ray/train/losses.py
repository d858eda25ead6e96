"""Losses for slide-level heads. The Cox loss is the negative log partial likelihood.

For a batch with log-hazards η, times t and events δ, at each distinct event time with d events
(set D) and risk set R = {j : t_j ≥ t}:

    Breslow: ℓ = Σ_D η_i − d · log Σ_R e^{η_j}
    Efron:   ℓ = Σ_D η_i − Σ_{l=0}^{d−1} log(Σ_R e^{η_j} − (l/d) · Σ_D e^{η_i})

Every sum of e^η is kept as its logarithm (log-sum-exp per time, then a reverse cumulative
log-sum-exp over times), so log-hazards that differ by hundreds within a batch, as a model that
separates its training slides drives them, keep a finite loss and gradients in float32. It
equals lifelines' `CoxPHFitter` log-likelihood for the same linear predictor.
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
    times, group = torch.unique(time.reshape(-1), return_inverse=True)  # ascending
    # log Σ_{t_j ≥ t} e^{η_j} at each distinct time: a log-sum-exp of each time's risks, then a
    # reverse cumulative one, so that no exp underflows however far apart the risks are.
    at_risk = torch.logcumsumexp(_group_logsumexp(risk, group, len(times)).flip(0), 0).flip(0)
    e = event.to(risk.dtype)
    d = torch.zeros(len(times), dtype=risk.dtype, device=risk.device).index_add_(0, group, e)
    eta_events = torch.zeros_like(d).index_add_(0, group, risk * e)
    if ties == "breslow":
        log_terms = d * at_risk
    else:
        # log(Σ_R e^η − (l/d) Σ_D e^η) = log Σ_R e^η + log(1 − (l/d) e^{log Σ_D e^η − log Σ_R e^η}),
        # where D ⊆ R keeps the ratio ≤ 1 and l/d < 1.
        events = _group_logsumexp(risk.masked_fill(~event, float("-inf")), group, len(times))
        ratio = torch.exp(torch.where(d > 0, events - at_risk, torch.full_like(d, float("-inf"))))
        steps = torch.arange(int(d.max().item()), device=risk.device, dtype=risk.dtype)
        used = steps[None, :] < d[:, None]
        frac = torch.where(used, steps[None, :] / d.clamp(min=1)[:, None], torch.zeros_like(used, dtype=risk.dtype))
        log_terms = ((at_risk[:, None] + torch.log1p(-frac * ratio[:, None])) * used).sum(1)
    loglik = (eta_events - log_terms)[d > 0].sum()
    return -loglik / n_events if reduction == "mean" else -loglik


def _group_logsumexp(values: torch.Tensor, group: torch.Tensor, k: int) -> torch.Tensor:
    """log Σ e^{values} within each of ``k`` groups; -inf (with zero gradients) for a group whose
    values are all -inf."""
    top = torch.full((k,), float("-inf"), dtype=values.dtype, device=values.device)
    top = top.scatter_reduce(0, group, values.detach(), reduce="amax")
    empty = torch.isinf(top)
    shift = torch.where(empty, torch.zeros_like(top), top)
    sums = torch.zeros_like(top).index_add_(0, group, torch.exp(values - shift[group]))
    logs = torch.log(torch.where(empty, torch.ones_like(sums), sums)) + shift
    return torch.where(empty, torch.full_like(logs, float("-inf")), logs)


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


def whole_batch(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every worker's ``output`` and ``target`` of a distributed step, in rank order, the outputs
    carrying gradients back to the worker each came from; as given outside distributed training.

    A Cox risk set is the whole batch, not one worker's share of it. Each worker then computes
    the same loss; the gathered gradients come back summed over workers (× world size), which
    the averaging of gradients over workers divides out: the step is the whole batch's.
    """
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return output, target
    import torch.distributed.nn.functional as distributed  # autograd-aware collectives

    targets = [torch.empty_like(target) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(targets, target.contiguous())
    return torch.cat(distributed.all_gather(output.contiguous())), torch.cat(targets)


def step_loss(
    types: dict[str, str], outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The training loss of a step: each task's loss (``types``: task → type) summed, survival
    tasks' over the whole distributed batch (`whole_batch`)."""
    total = torch.zeros((), device=next(iter(outputs.values())).device)
    for name, kind in types.items():
        output, target = outputs[name].float(), targets[name]
        if kind == "survival":
            output, target = whole_batch(output, target)
        total = total + task_loss(kind, output, target)
    return total
