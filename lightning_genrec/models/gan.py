"""What the GANs (CFGAN, LARA) share.

Both train as their authors do, in rounds: a discriminator phase (``d_steps`` shuffled
passes over the training rows in minibatches, one step of D's optimizer each, G held
fixed), then a generator phase (``g_steps`` passes, one step of G's optimizer each, D
held fixed).  A phase reads the whole training data, so one round is one Lightning
``training_step`` with manual optimization (two optimizers, as in Lightning's GAN
example), and one Lightning epoch is one round: the loader serves a single placeholder
batch per epoch (:class:`RoundData`).  Each GAN's ``training_step`` spells out its two
phases; the small helpers here draw the round's minibatches, take one optimizer step
and stop a collapsed GAN instead of evaluating it.

Several processes (DDP): all processes hold the training data and draw the same
minibatches from a broadcast round seed; in each optimizer step a process computes the
loss of its share of the minibatch (weighted by that share) and the gradients are summed
over processes before the step, so W processes take the steps one process would take
with the same minibatches, each computing 1/W of every one.  DDP's own reducer (one
reduction per forward) is left idle, since a round takes many steps in one forward.
Collapse checks read losses summed over the processes, so every process stops together.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from lightning_genrec.data import InteractionData
from lightning_genrec.errors import GANCollapseError
from lightning_genrec.hparams import integer, number
from lightning_genrec.models.base import GenRecModule

# settings both GANs have, declared once
G_LEARNING_RATE = number("g_learning_rate", 1e-4, "generator Adam step size.", low_open=True)
D_LEARNING_RATE = number("d_learning_rate", 1e-4, "discriminator Adam step size.", low_open=True)
COLLAPSE = (
    number("collapse_d_loss", 1e-3, "a round-mean discriminator loss below this counts as D winning outright."),
    integer("collapse_patience", 5, "such rounds in a row before training stops as collapsed."),
)


class RoundData(InteractionData):
    """:class:`~lightning_genrec.data.InteractionData` whose training epoch is one example: a
    GAN round, which reads the whole training data (the model draws its own minibatches)."""

    def train_examples(self) -> np.ndarray:
        return np.zeros(1, dtype=np.int64)

    def train_batch(self, examples) -> dict[str, torch.Tensor]:
        return {"round": torch.as_tensor(np.asarray(examples, dtype=np.int64))}


class RoundGAN(GenRecModule):
    """Base for GANs trained a round per ``training_step``.

    A subclass sets ``automatic_optimization = False`` and, in ``build()``, registers the
    ``d_wins`` buffer (:meth:`register_d_wins`); its hparams include ``collapse_d_loss`` and
    ``collapse_patience``."""

    data_class = RoundData

    def register_d_wins(self) -> None:
        self.register_buffer("d_wins", torch.zeros((), dtype=torch.long))   # rounds in a row D has won outright

    # -- several processes --------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        """(number of processes, this process's rank)."""
        trainer = self._trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _no_ddp_reducer(self):
        """A context in which backward passes leave DDP's own gradient reducer idle: a round takes many
        optimizer steps in one ``training_step`` and all-reduces each step's gradients itself."""
        wrapper = getattr(self._trainer.strategy, "model", None) if self._trainer is not None else None
        return wrapper.no_sync() if isinstance(wrapper, DistributedDataParallel) else contextlib.nullcontext()

    def round_generator(self) -> torch.Generator:
        """The round's own random stream (minibatch order, ZR / PM seeds, negative users): a function of
        torch's seed (``torch.initial_seed()``, what ``seed_everything`` / RecBole's ``seed`` set) and
        the round number, so a run is reproducible, a resumed run draws what an uninterrupted one
        would, and the draws do not depend on how many random numbers other code took before.  Under
        several processes rank 0's seed is broadcast: every process draws the same minibatches."""
        mixed = np.random.SeedSequence([torch.initial_seed() % 2 ** 63, int(self.current_epoch)])
        seed = int(mixed.generate_state(1, np.uint64)[0] >> np.uint64(2))
        if self._world()[0] > 1:
            seed = int(self.trainer.strategy.broadcast(seed, src=0))
        return torch.Generator().manual_seed(seed)

    def minibatches(self, n: int, batch_size: int, passes: int, g: torch.Generator) -> Iterator[torch.Tensor]:
        """Index tensors (on the model's device) of ``passes`` shuffled passes over ``n`` rows (every
        process gets the same ones; :meth:`step` takes this process's share)."""
        for _ in range(passes):
            yield from torch.randperm(n, generator=g).to(self.device).split(batch_size)

    def step(self, opt, loss_of: Callable[[torch.Tensor], torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the minibatch ``idx``: ``loss_of(rows)`` is the mean loss over ``rows``.
        Returns the minibatch's loss, a tensor on the device (:meth:`pass_losses` checks a pass).

        With W processes each takes every W-th row of the minibatch; its loss is weighted by its share
        of the rows and the gradients are summed over the processes, which is the gradient of the
        whole minibatch's mean loss: the same step as one process taking the whole minibatch (up to
        float rounding).  The loss is summed the same way before the finiteness check, so all
        processes agree on it."""
        world, rank = self._world()
        part = idx[rank::world] if world > 1 else idx
        weight = len(part) / len(idx)
        loss = loss_of(part) * weight if len(part) else None
        total = loss.detach().clone() if loss is not None else torch.zeros((), device=self.device)
        if world > 1:
            torch.distributed.all_reduce(total)
        opt.zero_grad()
        if loss is not None:
            with self._no_ddp_reducer():
                self.manual_backward(loss)
        if world > 1:
            params = [p for group in opt.param_groups for p in group["params"]]
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([grad.reshape(-1) for grad in grads])
            torch.distributed.all_reduce(flat)
            for p, chunk in zip(params, flat.split([p.numel() for p in params])):
                p.grad = chunk.view_as(p).clone()
        opt.step()
        return total

    def pass_losses(self, losses: list[torch.Tensor], network: str) -> list[torch.Tensor]:
        """``losses`` (one pass of :meth:`step`'s minibatch losses), after one check that all are
        finite: the check reads the device once per pass, not once per minibatch (a GPU would wait at
        each).  A non-finite loss stops training; the steps after it in the pass changed weights
        that are not evaluated."""
        stacked = torch.stack(losses)
        if not bool(torch.isfinite(stacked).all()):
            bad = float(stacked[~torch.isfinite(stacked)][0])
            raise GANCollapseError(f"{type(self).__name__} collapsed: the {network} loss became {bad} in "
                                   f"round {self.current_epoch}; training stopped and the model is not evaluated. "
                                   "Try smaller g_learning_rate / d_learning_rate.")
        return losses

    def log_round(self, d_losses: list[torch.Tensor], g_losses: list[torch.Tensor]) -> tuple[float, float]:
        """Log the round's mean D and G minibatch losses (``train/loss`` is G's); returns both."""
        d_mean, g_mean = (float(torch.stack(losses).double().mean()) for losses in (d_losses, g_losses))
        self.log_dict({"train/d_loss": d_mean, "train/g_loss": g_mean}, on_step=False, on_epoch=True, batch_size=1)
        self.log("train/loss", g_mean, on_step=True, on_epoch=True, prog_bar=True, batch_size=1)
        return d_mean, g_mean

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


__all__ = ["GANCollapseError", "RoundGAN", "RoundData"]
