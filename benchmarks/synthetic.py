"""Synthetic RecBole atomic data sets shaped like MovieLens, deterministic by seed.

Named shapes (``--shape``): ``ml-1m`` (6,040 users, 3,706 items, 1,000,209 interactions) and
``ml-20m`` (138,493 users, 26,744 items, 20,000,263 interactions), or any shape given as
``--users/--items/--interactions``.  Writes ``<out>/<name>/<name>.inter`` and ``<name>.item``
(RecBole's atomic format, tab-separated, typed header) and ``<name>.synth.json`` (the parameters;
RecBole ignores it).  ``<name>`` is ``synth-<shape>`` (``synth-ml-1m``) so that a wrong ``data_path``
can never make RecBole download the real MovieLens set of that name.

How the data come about (every step a vectorised numpy draw from one ``np.random.Generator``):

* K latent topics.  Each item has one topic (topic sizes uneven) and a popularity weight drawn
  log-normal (``item_sigma``): a heavy tail of items.
* Each user has a topic mixture (Dirichlet, concentration ``TOPIC_CONCENTRATION``: mostly one to
  three topics) and draws a share ``GLOBAL_SHARE`` of the items from plain popularity.  The item
  distribution of a user is ``sum_k mix_uk * P_k`` with ``P_k`` proportional to popularity inside
  topic k -- never a users x items array: ``P`` is (K + 1) x items.
* Activity: ``min_per_user`` plus a log-normal amount (``user_sigma``) scaled so the counts sum to
  exactly ``interactions``, capped at ``CAP_RATIO`` of the items.
* A user's items are drawn without replacement (successive sampling): light users draw i.i.d.
  items (inverse CDF with ``searchsorted``) and keep the first ``c_u`` distinct ones, redrawing
  the few that came up short; heavy users (``c_u >= items * HEAVY_RATIO``) and the rest take the
  top ``c_u`` of log-weight + Gumbel noise over all items, which is the same distribution.
* Time: a user goes through their topics in a random order of their own (with overlap), so
  sequences carry the topic structure; timestamps increase per user from a start date in
  2000-2014, gaps exponential around a log-normal span (median two months).
* Rating 1-5 (written as integers, typed float like MovieLens): user bias + item quality + the
  user's affinity to the item's topic + noise; mean about 3.5.
* Item fields named as ml-100k's, so CVAE's and LARA's defaults read them with no override:
  ``class:token_seq`` (1-3 of MovieLens' 18 genres: the topic's pair, sometimes one more),
  ``movie_title:token_seq`` (1-6 words, most from the topic's own vocabulary) and
  ``release_year:token``.

Usage:
    python benchmarks/synthetic.py --shape ml-1m --out /tmp/synth --seed 0
    python benchmarks/synthetic.py --users 2000 --items 1000 --interactions 60000 --out /tmp/synth
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

#: share of every user's draws that come from plain item popularity (the rest from their topics)
GLOBAL_SHARE = 0.25
#: Dirichlet concentration of the user topic mixtures (small: a user likes few topics)
TOPIC_CONCENTRATION = 0.2
#: no user interacts with more than this share of the items
CAP_RATIO = 0.5
#: users with at least this share of the items are drawn by Gumbel top-k over all items
HEAVY_RATIO = 1 / 20
#: interactions generated (and written) per chunk of users: bounds the memory at any size
CHUNK_INTERACTIONS = 1_000_000
#: 2000-01-01 UTC and the span of start dates (15 years)
T0, HORIZON = 946_684_800, 15 * 365 * 86_400
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
COMMON_WORDS = ("the", "of", "a", "and", "in", "man", "night", "love", "day", "story", "last", "return", "world",
                "city", "house", "war", "life", "girl", "king", "dark", "time", "star", "dead", "little", "big",
                "lost", "blue", "one", "two", "ii")


@dataclass(frozen=True)
class Shape:
    users: int
    items: int
    interactions: int
    min_per_user: int | None = None   # None: half the mean count, within [5, 20] (never above the mean)
    item_sigma: float = 1.3           # log-normal sigma of the item popularity weights
    user_sigma: float = 1.2           # log-normal sigma of the activity above the minimum
    topics: int | None = None         # None: items // 20, within [2, 20]

    def resolved(self) -> "Shape":
        """The shape with ``min_per_user`` and ``topics`` filled in and checked."""
        if min(self.users, self.items, self.interactions) < 1:
            raise ValueError(f"users, items and interactions must be positive: {self}")
        mean = self.interactions / self.users
        low = self.min_per_user if self.min_per_user is not None else int(min(20, max(5, mean // 2), mean))
        topics = self.topics if self.topics is not None else int(min(20, max(2, self.items // 20)))
        cap = max(1, int(self.items * CAP_RATIO))
        if not 1 <= low <= cap:
            raise ValueError(f"min_per_user={low} must be between 1 and {cap} ({CAP_RATIO} of {self.items} items)")
        if not self.users * low <= self.interactions <= self.users * cap:
            raise ValueError(f"{self.interactions:,} interactions cannot be spread over {self.users:,} users with "
                             f"{low} to {cap} items each (at most {CAP_RATIO} of the items)")
        if not 1 <= topics <= self.items:
            raise ValueError(f"topics={topics} must be between 1 and the number of items ({self.items})")
        return Shape(self.users, self.items, self.interactions, low, self.item_sigma, self.user_sigma, topics)


#: MovieLens' sizes; the sigmas give roughly their mean / median ratios of items per user and users per item
SHAPES = {
    "ml-1m": Shape(6_040, 3_706, 1_000_209, min_per_user=20, item_sigma=1.3, user_sigma=1.15, topics=20),
    "ml-20m": Shape(138_493, 26_744, 20_000_263, min_per_user=20, item_sigma=2.0, user_sigma=1.4, topics=40),
}


@dataclass
class Latent:
    """The hidden structure the interactions are drawn from (every array indexed by 0-based id)."""

    shape: Shape
    item_topic: np.ndarray     # (I,) topic of each item
    popularity: np.ndarray     # (I,) popularity weight, sums to 1
    quality: np.ndarray        # (I,) rating offset of each item
    mix: np.ndarray            # (U, K + 1) user mixture over topics; last column: plain popularity
    counts: np.ndarray         # (U,) interactions of each user
    user_bias: np.ndarray      # (U,) rating offset of each user
    topic_rank: np.ndarray     # (U, K) position of each topic in the user's timeline
    start: np.ndarray          # (U,) first timestamp
    span: np.ndarray           # (U,) seconds the user's interactions spread over (about)

    @property
    def user_group(self) -> np.ndarray:
        """(U,) each user's main topic."""
        return self.mix[:, :-1].argmax(axis=1)

    def item_distributions(self) -> np.ndarray:
        """(K + 1, I): row k the item distribution of topic k, the last row plain popularity."""
        k = self.shape.topics
        p = np.zeros((k + 1, self.shape.items))
        p[self.item_topic, np.arange(self.shape.items)] = self.popularity
        p[k] = self.popularity
        return p / p.sum(axis=1, keepdims=True)


def activity(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """(U,) counts >= ``min_per_user``, <= the cap, log-normal above the minimum, summing exactly to
    ``shape.interactions``."""
    cap = max(1, int(shape.items * CAP_RATIO))
    low, total = shape.min_per_user, shape.interactions
    raw = rng.lognormal(0.0, shape.user_sigma, shape.users)
    counts = lambda s: np.minimum(low + s * raw, cap)   # noqa: E731
    lo, hi = 0.0, 1.0
    while counts(hi).sum() < total and hi < 1e15:
        hi *= 2
    for _ in range(100):                                 # bisection on the scale
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if counts(mid).sum() < total else (lo, mid)
    exact = counts(hi)
    out = np.floor(exact).astype(np.int64)
    short = total - int(out.sum())
    while short > 0:                                     # round up the largest remainders, below the cap
        room = np.flatnonzero(out < cap)
        take = room[np.argsort(-(exact[room] - out[room]), kind="stable")[:short]]
        out[take] += 1
        short -= len(take)
    while short < 0:                                     # only from float rounding: take back from the largest
        take = np.argsort(-out, kind="stable")[:-short]
        take = take[out[take] > low]
        out[take] -= 1
        short += len(take)
    return out


def make_latent(shape: Shape, seed: int) -> Latent:
    """The latent structure of ``shape`` for ``seed`` (the first draws of the seed's generator)."""
    shape = shape.resolved()
    rng = np.random.default_rng(seed)
    k, n_items, n_users = shape.topics, shape.items, shape.users
    sizes = rng.dirichlet(np.full(k, 3.0))
    item_topic = rng.choice(k, size=n_items, p=sizes)
    item_topic[rng.permutation(n_items)[:k]] = np.arange(k)          # every topic has an item
    log_pop = rng.normal(0.0, shape.item_sigma, n_items)
    popularity = np.exp(log_pop - log_pop.max())
    popularity /= popularity.sum()
    quality = 0.3 * rng.standard_normal(n_items) + 0.15 * (log_pop - log_pop.mean()) / shape.item_sigma
    theta = rng.dirichlet(np.full(k, TOPIC_CONCENTRATION), size=n_users)
    theta = np.nan_to_num(theta, nan=1.0 / k)
    mix = np.concatenate([(1 - GLOBAL_SHARE) * theta, np.full((n_users, 1), GLOBAL_SHARE)], axis=1)
    counts = activity(rng, shape)
    user_bias = 0.4 * rng.standard_normal(n_users)
    topic_rank = np.argsort(rng.random((n_users, k)), axis=1).argsort(axis=1).astype(np.int16)
    start = T0 + np.floor(rng.random(n_users) * 0.9 * HORIZON).astype(np.int64)
    span = np.clip(rng.lognormal(np.log(60 * 86_400), 1.5, n_users), 3_600, 0.1 * HORIZON)
    return Latent(shape, item_topic, popularity, quality, mix, counts, user_bias, topic_rank, start, span)


def _sample_light(rng, mix, counts, cum, attempts: int = 4):
    """Successive sampling for users with few items: i.i.d. draws from each user's mixture, the first
    ``counts[u]`` distinct items kept.  Returns ``(done, items)``: ``done`` (n,) bool, ``items`` the
    items of the done users, user by user in draw order."""
    n, n_comp = mix.shape
    n_items = cum.shape[1]
    cum_mix = np.cumsum(mix, axis=1)
    cum_mix /= cum_mix[:, -1:]
    flat_mix = (cum_mix + np.arange(n)[:, None]).ravel()             # row u's cdf shifted by u: one search
    done = np.zeros(n, dtype=bool)
    kept_users, kept_items = [], []
    pending = np.arange(n)
    factor = 1.3
    for _ in range(attempts):
        if len(pending) == 0:
            break
        c = counts[pending]
        draws = np.ceil(c * factor).astype(np.int64) + 8
        who = np.repeat(np.arange(len(pending)), draws)              # index into pending
        user = pending[who]
        comp = np.searchsorted(flat_mix, user + rng.random(len(who)), side="right") - user * n_comp
        np.clip(comp, 0, n_comp - 1, out=comp)
        item = np.empty(len(who), dtype=np.int64)
        r = rng.random(len(who))
        for k in range(n_comp):
            sel = comp == k
            item[sel] = np.searchsorted(cum[k], r[sel], side="right")
        np.clip(item, 0, n_items - 1, out=item)
        _, first = np.unique(who * n_items + item, return_index=True)
        first.sort()                                                 # grouped by user, in draw order
        w = who[first]
        rank = np.arange(len(w)) - np.searchsorted(w, w)             # place among the user's distinct items
        ok = np.bincount(w, minlength=len(pending)) >= c
        keep = ok[w] & (rank < c[w])
        kept_users.append(pending[w[keep]])
        kept_items.append(item[first[keep]])
        done[pending[ok]] = True
        pending = pending[~ok]
        factor *= 2
    if not kept_users:
        return done, np.zeros(0, dtype=np.int64)
    users = np.concatenate(kept_users)
    return done, np.concatenate(kept_items)[np.argsort(users, kind="stable")]


def _sample_heavy(rng, mix, counts, probs, rows_per_block: int):
    """Successive sampling by Gumbel top-k over every item (for users with many items): the top
    ``counts[u]`` of log p_u(i) + Gumbel noise, in descending order.  Items user by user."""
    out = []
    for s in range(0, len(counts), rows_per_block):
        p = mix[s:s + rows_per_block] @ probs                        # (B, I): a block of users only
        with np.errstate(divide="ignore"):
            keys = np.log(p) - np.log(-np.log(rng.random(p.shape)))
        for row, c in zip(keys, counts[s:s + rows_per_block]):
            top = np.argpartition(-row, c - 1)[:c]
            out.append(top[np.argsort(-row[top], kind="stable")])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def sample_chunk(rng, lat: Latent, users: np.ndarray, probs: np.ndarray, cum: np.ndarray) -> pd.DataFrame:
    """The interactions of ``users`` (a contiguous, increasing run of 0-based ids), in time order per
    user: columns user, item (0-based), rating (1-5), timestamp."""
    n_items = lat.shape.items
    counts, mix = lat.counts[users], lat.mix[users]
    heavy = counts >= max(1, int(n_items * HEAVY_RATIO))
    light = np.flatnonzero(~heavy)
    done, light_items = _sample_light(rng, mix[light], counts[light], cum)
    light_done = light[done]
    rest = np.sort(np.concatenate([np.flatnonzero(heavy), light[~done]]))
    heavy_items = _sample_heavy(rng, mix[rest], counts[rest], probs, max(1, 4_000_000 // n_items))
    # put both groups back in user order
    local = np.concatenate([np.repeat(light_done, counts[light_done]), np.repeat(rest, counts[rest])])
    order = np.argsort(local, kind="stable")
    local, item = local[order], np.concatenate([light_items, heavy_items])[order]
    user = users[local]
    topic = lat.item_topic[item]
    # time order: the user's own order of topics, with overlap between neighbours
    when = lat.topic_rank[user, topic] + 2.5 * rng.random(len(item))
    order = np.lexsort((when, local))
    user, item, topic, local = user[order], item[order], topic[order], local[order]
    first = np.searchsorted(local, local)                            # index of each user's first row
    gaps = 1 + np.floor(rng.exponential(1.0, len(item)) * (lat.span / lat.counts)[user]).astype(np.int64)
    elapsed = np.cumsum(gaps)
    timestamp = lat.start[user] + elapsed - elapsed[first] + gaps[first]
    affinity = lat.mix[user, topic] / lat.mix[users, :-1].max(axis=1)[local]   # 1: the user's main topic
    score = (3.15 + lat.user_bias[user] + lat.quality[item] + 1.0 * affinity
             + 0.9 * rng.standard_normal(len(item)))
    rating = np.clip(np.rint(score), 1, 5).astype(np.int8)
    return pd.DataFrame({"user": user, "item": item, "rating": rating, "timestamp": timestamp})


def chunks(counts: np.ndarray, size: int = CHUNK_INTERACTIONS) -> list[np.ndarray]:
    """Contiguous runs of users with about ``size`` interactions each."""
    ends = np.searchsorted(np.cumsum(counts), np.arange(size, counts.sum(), size), side="right")
    bounds = np.unique(np.concatenate([[0], ends, [len(counts)]]))
    return [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def interactions(shape: Shape, seed: int, latent: Latent | None = None):
    """Yield the interactions of ``shape`` chunk by chunk (DataFrames, 0-based ids); deterministic by
    ``seed``."""
    lat = latent or make_latent(shape, seed)
    probs = lat.item_distributions()
    cum = np.cumsum(probs, axis=1)
    cum /= cum[:, -1:]
    rng = np.random.default_rng([seed, 1])                           # apart from the latent draws
    for users in chunks(lat.counts):
        yield sample_chunk(rng, lat, users, probs, cum)


def item_table(lat: Latent, seed: int) -> pd.DataFrame:
    """The ``.item`` fields (0-based item index): movie_title, release_year, class."""
    rng = np.random.default_rng([seed, 2])
    k, n_items = lat.shape.topics, lat.shape.items
    # topic vocabularies of made-up words (distinct across topics) and each topic's genre pair
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    vocab_size = 40
    words: list[str] = []
    seen: set[str] = set(COMMON_WORDS)
    while len(words) < k * vocab_size:
        w = "".join(rng.choice(syllables, size=int(rng.integers(2, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    topic_words = np.array(words).reshape(k, vocab_size)
    word_weights = 1.0 / np.arange(1, vocab_size + 1)                 # Zipf within a topic
    word_weights /= word_weights.sum()
    common_weights = 1.0 / np.arange(1, len(COMMON_WORDS) + 1)
    common_weights /= common_weights.sum()
    pairs = np.array([(a, b) for a in range(len(GENRES)) for b in range(a + 1, len(GENRES))])
    topic_genres = pairs[rng.permutation(len(pairs))[np.arange(k) % len(pairs)]]
    topic_year = rng.normal(0.0, 6.0, k)

    t = lat.item_topic
    keep = rng.random((n_items, 2)) < 0.85
    keep[~keep.any(axis=1), 0] = True
    extra = np.where(rng.random(n_items) < 0.25, rng.integers(0, len(GENRES), n_items), -1)
    length = np.minimum(1 + rng.poisson(1.5, n_items), 6)
    from_topic = rng.random((n_items, 6)) < 0.6
    topic_pick = rng.choice(vocab_size, size=(n_items, 6), p=word_weights)
    common_pick = rng.choice(len(COMMON_WORDS), size=(n_items, 6), p=common_weights)
    titles, genres = [], []
    for i in range(n_items):
        titles.append(" ".join(topic_words[t[i], topic_pick[i, j]] if from_topic[i, j]
                               else COMMON_WORDS[common_pick[i, j]] for j in range(length[i])))
        g = [GENRES[topic_genres[t[i], j]] for j in range(2) if keep[i, j]]
        if extra[i] >= 0 and GENRES[extra[i]] not in g:
            g.append(GENRES[extra[i]])
        genres.append(" ".join(g))
    year = np.clip(np.rint(2012 - rng.exponential(12.0, n_items) + topic_year[t]), 1919, 2015).astype(int)
    return pd.DataFrame({"movie_title": titles, "release_year": year, "class": genres})


def default_name(shape_name: str | None, shape: Shape) -> str:
    if shape_name:
        return f"synth-{shape_name}"
    tails = "".join(f"-{tag}{value:g}" for tag, value, default in
                    (("is", shape.item_sigma, Shape.item_sigma), ("us", shape.user_sigma, Shape.user_sigma))
                    if value != default)
    return f"synth-{shape.users}u-{shape.items}i-{shape.interactions}{tails}"


def generate(out_dir: str, shape: Shape, seed: int = 0, name: str | None = None, log=print) -> dict:
    """Write ``<out_dir>/<name>/<name>.inter``, ``.item`` and ``.synth.json``; returns a summary
    (paths, sizes, seconds).  ``log`` gets progress lines (``None``: quiet)."""
    log = log or (lambda *_: None)
    shape = shape.resolved()
    name = name or default_name(None, shape)
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    start = time.perf_counter()
    lat = make_latent(shape, seed)
    inter_path = os.path.join(folder, f"{name}.inter")
    written = 0
    with open(inter_path + ".part", "w", newline="") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for chunk in interactions(shape, seed, lat):
            chunk["user"] += 1                                       # ids 1..U and 1..I in the files
            chunk["item"] += 1
            chunk.to_csv(f, sep="\t", header=False, index=False)
            written += len(chunk)
            log(f"  {written:>12,} / {shape.interactions:,} interactions  {time.perf_counter() - start:7.1f} s")
    os.replace(inter_path + ".part", inter_path)
    items = item_table(lat, seed)
    items.insert(0, "item_id", np.arange(1, shape.items + 1))
    item_path = os.path.join(folder, f"{name}.item")
    items.to_csv(item_path, sep="\t", index=False,
                 header=["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"])
    meta = {"name": name, "seed": seed, **asdict(shape), "global_share": GLOBAL_SHARE,
            "topic_concentration": TOPIC_CONCENTRATION, "cap_ratio": CAP_RATIO}
    meta_path = os.path.join(folder, f"{name}.synth.json")
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    seconds = time.perf_counter() - start
    return {"name": name, "folder": folder, "data_path": out_dir, "seconds": seconds, "interactions": written,
            "files": {p: os.path.getsize(p) for p in (inter_path, item_path, meta_path)}}


def shape_from_args(args) -> tuple[str | None, Shape]:
    """``(shape name or None, Shape)`` from ``--shape`` or ``--users/--items/--interactions`` (and the
    optional ``--min-per-user`` / ``--topics``)."""
    custom = (args.users, args.items, args.interactions)
    if args.shape:
        if any(v is not None for v in custom):
            raise SystemExit("give --shape or --users/--items/--interactions, not both")
        base, name = SHAPES[args.shape], args.shape
    elif all(v is not None for v in custom):
        base, name = Shape(*custom), None
    else:
        raise SystemExit("give --shape NAME, or all of --users, --items and --interactions")
    overrides = {k: v for k, v in (("min_per_user", args.min_per_user), ("topics", args.topics),
                                   ("item_sigma", args.item_sigma), ("user_sigma", args.user_sigma))
                 if v is not None}
    return name, Shape(**{**asdict(base), **overrides})


def add_shape_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a named shape")
    parser.add_argument("--users", type=int)
    parser.add_argument("--items", type=int)
    parser.add_argument("--interactions", type=int)
    parser.add_argument("--min-per-user", type=int, help="fewest interactions of a user (default: see Shape)")
    parser.add_argument("--topics", type=int, help="latent topics (default: see Shape)")
    parser.add_argument("--item-sigma", type=float, help="log-normal sigma of item popularity (default: see Shape)")
    parser.add_argument("--user-sigma", type=float, help="log-normal sigma of user activity (default: see Shape)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(parser)
    parser.add_argument("--out", default=os.path.join("/tmp", "lightning-genrec-synth"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", help="data set name (default: synth-<shape>)")
    args = parser.parse_args(argv)
    shape_name, shape = shape_from_args(args)
    name = args.name or default_name(shape_name, shape.resolved())
    print(f"generating {name}: {shape.users:,} users, {shape.items:,} items, {shape.interactions:,} interactions, "
          f"seed {args.seed}", flush=True)
    summary = generate(args.out, shape, args.seed, name, log=lambda line: print(line, flush=True))
    for path, size in summary["files"].items():
        print(f"wrote {path} ({size / 2**20:.1f} MiB)")
    print(f"{summary['interactions']:,} interactions in {summary['seconds']:.1f} s; use it with "
          f"data_path={summary['data_path']!r}, dataset={name!r}")


if __name__ == "__main__":
    sys.exit(main())
