"""KL weight schedules.

Pure functions of the optimizer step, so the only state is the step counter,
which Lightning already keeps in every checkpoint (``trainer.global_step``):
a resumed run continues the schedule exactly where it stopped.

``step`` counts optimizer updates already done, so the first update uses
``beta(0)`` -- as Liang et al., whose first minibatch has beta = 0.
"""
from __future__ import annotations

SCHEDULES = ("linear", "cyclical", "constant")


def linear(step: int, cap: float, total_steps: int) -> float:
    """``min(cap, step / total_steps)`` (Liang et al. 2018). ``total_steps == 0`` means ``cap`` at once."""
    if total_steps <= 0:
        return cap
    return min(cap, step / total_steps)


def cyclical(step: int, cap: float, period: int, ratio: float = 0.5) -> float:
    """Cyclical annealing (Fu et al. 2019): in every ``period`` steps beta rises
    linearly from 0 to ``cap`` over the first ``ratio`` of the period, then stays at ``cap``."""
    if period <= 0:
        return cap
    position = (step % period) / period
    return cap * min(1.0, position / ratio) if ratio > 0 else cap


def constant(step: int, cap: float) -> float:
    """Always ``cap``."""
    return cap


def kl_weight(schedule: str, step: int, cap: float, total_steps: int, cycle_ratio: float = 0.5) -> float:
    """The weight of the KL term at optimizer step ``step`` under ``schedule``.

    For ``cyclical`` the period is ``total_steps``.
    """
    if schedule == "linear":
        return linear(step, cap, total_steps)
    if schedule == "cyclical":
        return cyclical(step, cap, total_steps, cycle_ratio)
    if schedule == "constant":
        return constant(step, cap)
    raise ValueError(f"anneal_schedule must be one of {SCHEDULES}, got {schedule!r}")
