"""What the GANs (CFGAN, LARA) share: one Lightning epoch is one round of the authors'
loop -- a discriminator phase, then a generator phase, each a series of minibatch steps
with its own optimizer (Lightning manual optimization) -- run inside one
``training_step``, plus the guards that stop a collapsed GAN instead of evaluating it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from lightning_genrec.data import InteractionTables
from lightning_genrec.errors import GANCollapseError
from lightning_genrec.models.base import GenRecModule


class RoundTables(InteractionTables):
    """:class:`~lightning_genrec.data.InteractionTables` whose training epoch is one unit: a
    GAN round, which reads the whole training data (the model draws its own minibatches)."""

    def train_units(self) -> np.ndarray:
        return np.zeros(1, dtype=np.int64)

    def train_batch(self, units) -> dict[str, torch.Tensor]:
        return {"round": torch.as_tensor(np.asarray(units, dtype=np.int64))}


class RoundGAN(GenRecModule):
    """Base for GANs trained a round per ``training_step``.

    A subclass sets ``automatic_optimization = False`` and, in ``build()``, registers the
    ``d_wins`` buffer (:meth:`register_d_wins`); its hparams include ``collapse_d_loss`` and
    ``collapse_patience``."""

    tables_class = RoundTables

    def register_d_wins(self) -> None:
        self.register_buffer("d_wins", torch.zeros((), dtype=torch.long))   # rounds in a row D has won outright

    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1:
            raise RuntimeError(f"{type(self).__name__} trains a whole round (its alternating discriminator and "
                               "generator minibatch passes) in one training_step, on one device; multi-process "
                               "strategies are not supported. Use devices=1.")

    def _phase(self, opt, passes: int, batch_size: int, loss_of: Callable[[torch.Tensor], torch.Tensor],
               who: str, n: int, g: torch.Generator) -> float:
        """``passes`` shuffled passes over ``n`` training units in minibatches, one step of ``opt``
        (the other network's parameters toggled off) per minibatch; returns the mean minibatch loss."""
        total, steps = 0.0, 0
        self.toggle_optimizer(opt)
        for _ in range(passes):
            for idx in torch.randperm(n, generator=g).to(self.device).split(batch_size):
                loss = loss_of(idx)
                self._check_round(loss, who)
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
                total, steps = total + loss.item(), steps + 1
        self.untoggle_optimizer(opt)
        return total / steps

    def _check_round(self, loss: torch.Tensor, who: str) -> None:
        if not torch.isfinite(loss):
            raise GANCollapseError(f"{type(self).__name__} collapsed: the {who} loss became {loss.item()} in round "
                                   f"{self.current_epoch}; training stopped and the model is not evaluated. "
                                   "Try smaller g_learning_rate / d_learning_rate.")

    @torch.no_grad()
    def _detect_collapse(self, d_mean: float, out: torch.Tensor, advice: str) -> None:
        """Stop on D winning outright for ``collapse_patience`` rounds (``d_mean`` below
        ``collapse_d_loss``), on non-finite generator output, or on a generator whose output
        ``out`` (B, N), for B different conditions, is the same for all of them."""
        h, name = self.hparams, type(self).__name__
        if d_mean < h.collapse_d_loss:
            self.d_wins += 1
        else:
            self.d_wins.zero_()
        if int(self.d_wins) >= h.collapse_patience:
            raise GANCollapseError(
                f"{name} collapsed: the discriminator loss stayed below {h.collapse_d_loss} for {int(self.d_wins)} "
                f"rounds (last {d_mean:.2e}, round {self.current_epoch}): D separates real from generated "
                f"vectors perfectly, so its verdict no longer guides G. {advice} (or raise collapse_patience).")
        if not torch.isfinite(out).all():
            raise GANCollapseError(f"{name} collapsed: in round {self.current_epoch} the generator's output became "
                                   "non-finite; training stopped and the model is not evaluated. Try smaller "
                                   "g_learning_rate / d_learning_rate.")
        spread = (out.max(dim=0).values - out.min(dim=0).values).max().item()
        if len(out) > 1 and spread < 1e-6 * max(1.0, out.abs().max().item()):
            raise GANCollapseError(
                f"{name} collapsed: in round {self.current_epoch} the generator gives the same vector for every "
                "condition (mode collapse), so every ranking would be the same. Training stopped; try another "
                "seed or smaller learning rates.")


__all__ = ["GANCollapseError", "RoundGAN", "RoundTables"]
