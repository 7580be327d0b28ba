"""The bridge between RecBole and lightning-genrec.

``import recbole_ext`` makes RecBole 1.2.1 work on today's numpy / pandas / torch, teaches RecBole's
evaluator ``Novelty`` and its datasets the cold-start item split (:mod:`recbole_ext.cold_start`) and
the held-out user split (:mod:`recbole_ext.heldout_users`), and registers the lightning-genrec models
so that RecBole's own entry points know them::

    import recbole_ext
    from recbole.quick_start import run_recbole
    run_recbole(model="MVAE", dataset="ml-100k")

Every change this makes to RecBole is declared once, in :mod:`recbole_ext.patches`.
``recbole_ext.Recommender(checkpoint)`` gives recommendations from a saved model
(:mod:`recbole_ext.recommend`).
"""
from recbole_ext import compat, patches

compat.prepare()    # before anything imports RecBole or ray
patches.apply()

from recbole_ext.config import make_config  # noqa: E402
from recbole_ext.datamodule import RecBoleDataModule  # noqa: E402
from recbole_ext.quick_start import run, run_recbole  # noqa: E402
from recbole_ext.recommend import Recommender  # noqa: E402

__all__ = ["RecBoleDataModule", "Recommender", "make_config", "run", "run_recbole"]
