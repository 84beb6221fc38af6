"""A multiclass LightGBM booster's probabilities for every (deal, interval) pair, without stacking.

The competing-risks close model scores each open deal in each future interval: the row of a
pair is the deal's features, the interval's calendar, and the deal's age at the interval's end
(``age + days_ahead + interval_days``). Stacked, a 5,000-deal pipeline is some 370,000 rows for
LightGBM to walk through every tree. Here each tree's splits are sorted by what they read:

* a split on a deal feature is decided once per deal;
* a split on the calendar, once per interval;
* a split on the age at the interval's end, per pair (a comparison of a sum).

A pair's way through a tree is those decisions' bits together, and a table of every way's leaf
value, built once per model, gives its output. Outputs are summed tree by tree in LightGBM's
order and turned into probabilities by LightGBM's softmax (``exp`` from the C library, as
LightGBM calls it), so the probabilities are LightGBM's to the last bit.

Numbers only: no I/O here. Time meaning: none of its own (it scores the pairs it is given).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lightgbm as lgb
import numpy as np

from models.treeshap import ZERO_THRESHOLD, parse_tree, tree_blocks

#: a tree is tabulated when it has at most this many splits: a table of 2^splits leaf values
#: (the default 15 leaves: 14 splits, 128 kB a tree)
MAX_SPLITS = 15
#: (deal, interval) pairs scored per block: the block's arrays stay small and are reused
BLOCK_PAIRS = 65_536
_CATEGORICAL, _DEFAULT_LEFT = 1, 2
_MISSING_ZERO, _MISSING_NAN = 1, 2
#: where a split's feature comes from
_DEAL, _INTERVAL, _CROSS = 0, 1, 2


class IntervalForest:
    """Class probabilities of a multiclass booster on (deal, interval) pairs.

    Parameters
    ----------
    booster
        A multiclass LightGBM booster of plain trees with at most :data:`MAX_SPLITS` splits.
    num_iteration
        Iterations used (the first ones).
    columns
        The booster's feature names in order.
    interval_columns
        The features the interval sets (its calendar).
    cross_column
        The feature set per pair as a sum of the deal's value and the interval's (the age at
        the interval's end), or ``None``.

    Raises
    ------
    ValueError
        A tree this does not read (linear, too many splits, a booster of one class).
    """

    def __init__(
        self,
        booster: lgb.Booster,
        *,
        num_iteration: int,
        columns: Sequence[str],
        interval_columns: Sequence[str],
        cross_column: str | None,
    ) -> None:
        self.n_classes = booster.num_model_per_iteration()
        if self.n_classes < 2:
            raise ValueError("not a multiclass booster")
        where = {name: j for j, name in enumerate(columns)}
        self._cross_at = where.get(cross_column) if cross_column is not None else None
        calendar = {where[c] for c in interval_columns if c in where} - {self._cross_at}
        self.trees: list[dict[str, Any]] = []
        for block in tree_blocks(booster.model_to_string(num_iteration=num_iteration)):
            tree = parse_tree(block)
            n_splits = int(tree["num_leaves"]) - 1
            if n_splits > MAX_SPLITS:
                raise ValueError(f"a tree of {n_splits} splits: too many to tabulate")
            self.trees.append(self._tabulate(tree, n_splits, calendar))

    def _tabulate(self, tree: dict[str, Any], n_splits: int, calendar: set[int]) -> dict[str, Any]:
        values = np.asarray(tree["leaf_value"], dtype="float64")
        if n_splits == 0:
            return {"constant": float(values[0])}
        feature = tree["split_feature"].astype(np.int64)
        kind = tree["decision_type"].astype(np.int64)
        threshold = tree["threshold"].astype("float64")
        bounds = tree.get("cat_boundaries", np.zeros(1, dtype=np.int64)).astype(np.int64)
        words = tree.get("cat_threshold", np.zeros(0, dtype=np.int64)).astype(np.int64)
        sets: list[np.ndarray] = []
        for k in range(n_splits):
            if kind[k] & _CATEGORICAL:
                at = int(threshold[k])
                w = words[bounds[at] : bounds[at + 1]]
                sets.append(np.flatnonzero(((w[:, None] >> np.arange(32)[None, :]) & 1).ravel()))
            else:
                sets.append(np.zeros(0, dtype=np.int64))
        source = np.array(
            [
                _CROSS if f == self._cross_at else _INTERVAL if f in calendar else _DEAL
                for f in feature.tolist()
            ]
        )
        # every combination of the splits' decisions (bit k: left at split k) → its leaf's value
        left, right = tree["left_child"], tree["right_child"]
        codes = np.arange(1 << n_splits, dtype=np.int64)
        node = np.zeros(codes.size, dtype=np.int64)
        leaf = np.full(codes.size, -1, dtype=np.int64)
        for _ in range(n_splits + 1):
            inside = leaf < 0
            if not inside.any():
                break
            go_left = ((codes[inside] >> node[inside]) & 1) == 1
            child = np.where(go_left, left[node[inside]], right[node[inside]])
            done = child < 0
            leaf_of = leaf[inside]
            leaf_of[done] = ~child[done]
            leaf[inside] = leaf_of
            moved = node[inside]
            moved[~done] = child[~done]
            node[inside] = moved
        return {
            "constant": None,
            "feature": feature,
            "threshold": threshold,
            "categorical": (kind & _CATEGORICAL) != 0,
            "default_left": (kind & _DEFAULT_LEFT) != 0,
            "missing": (kind >> 2) & 3,
            "sets": sets,
            "source": source,
            "cross": np.flatnonzero(source == _CROSS).tolist(),
            "table": values[leaf],
        }

    def probabilities(
        self,
        deals: np.ndarray,
        calendar: np.ndarray,
        cross: tuple[np.ndarray, Sequence[np.ndarray]] | None,
        *,
        threads: int = 1,
    ) -> np.ndarray:
        """(deals, intervals, classes): the softmax of each pair's raw scores.

        Parameters
        ----------
        deals
            (n, features): each deal's row as the booster reads it (float64).
        calendar
            (m, features): each interval's row; only its calendar columns are read.
        cross
            ``(deal_values (n,), [interval_values (m,), …])``: the cross feature of a pair is
            ``deal_value + interval_value + …``, summed left to right as the stacked rows sum
            it (None when the booster has no such feature).
        threads
            Blocks of deals scored at once (the model's threads).
        """
        n, m = len(deals), len(calendar)
        out = np.empty((n, m, self.n_classes))
        # every split on a deal feature decided once per deal, on the calendar once per interval
        deal_codes = self._codes(_as_read(np.asarray(deals, dtype="float64")), _DEAL)
        calendar_codes = self._codes(_as_read(np.asarray(calendar, dtype="float64")), _INTERVAL)
        step = max(1, BLOCK_PAIRS // max(m, 1))

        def block(start: int) -> None:
            stop = min(n, start + step)
            pair_value = None
            if cross is not None:
                # summed as the stacked rows sum it: the same float64 value
                total = np.broadcast_to(cross[0][start:stop, None], (stop - start, m))
                for part in cross[1]:
                    total = total + part[None, :]
                pair_value = _as_read(total)
            raw = self._raw(deal_codes[start:stop], calendar_codes, pair_value)
            out[start:stop] = self._softmax(raw)

        starts = list(range(0, n, step))
        if threads > 1 and len(starts) > 1:
            # blocks of deals side by side: numpy lets go of the interpreter inside each
            # operation on a block's arrays, so the threads share the cores as LightGBM's did
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(block, starts))
        else:
            for start in starts:
                block(start)
        return out

    def _codes(self, rows: np.ndarray, source: int) -> np.ndarray:
        """(rows, trees): the bits of each tree's splits of ``source`` that each row goes left at."""
        codes = np.zeros((len(self.trees), len(rows)), dtype=np.int32)
        for t, tree in enumerate(self.trees):
            if tree["constant"] is not None:
                continue
            for s in np.flatnonzero(tree["source"] == source).tolist():
                left = _goes_left(tree, s, rows[:, tree["feature"][s]])
                codes[t] += (left << s).astype(np.int32)
        return codes.T

    def _raw(
        self, deal_codes: np.ndarray, calendar_codes: np.ndarray, pair_value: np.ndarray | None
    ) -> list[np.ndarray]:
        """Each class's raw score of every pair, summed tree by tree as LightGBM sums them."""
        n, m = len(deal_codes), len(calendar_codes)
        raw = [np.zeros((n, m)) for _ in range(self.n_classes)]
        missing = None if pair_value is None else np.isnan(pair_value)
        code = np.empty((n, m), dtype=np.int32)
        left = np.empty((n, m), dtype=bool)
        for t, tree in enumerate(self.trees):
            k = t % self.n_classes
            if tree["constant"] is not None:
                raw[k] += tree["constant"]
                continue
            np.add(deal_codes[:, t, None], calendar_codes[None, :, t], out=code)
            for s in tree["cross"]:
                assert pair_value is not None and missing is not None
                _pair_goes_left(tree, s, pair_value, missing, left)
                np.add(code, np.int32(1 << s), out=code, where=left)
            raw[k] += tree["table"][code]
        return raw

    def _softmax(self, raw: list[np.ndarray]) -> np.ndarray:
        """LightGBM's softmax: the largest score subtracted, ``exp`` of the C library, summed
        in class order."""
        top = raw[0]
        for r in raw[1:]:
            top = np.maximum(r, top)
        exps = []
        for r in raw:
            shifted = (r - top).ravel()
            e = np.ones(shifted.size)
            # exp(0) = 1 for the largest class; the others through the C library's exp, as
            # LightGBM's own (numpy's vectorised exp differs from it in the last bit at times)
            others = np.flatnonzero(shifted != 0.0)
            e[others] = np.fromiter(
                map(math.exp, shifted[others].tolist()), dtype="float64", count=others.size
            )
            exps.append(e.reshape(r.shape))
        total = np.zeros(top.shape)
        for e in exps:
            total += e
        return np.stack([e / total for e in exps], axis=2)


def _as_read(values: np.ndarray) -> np.ndarray:
    """Values as LightGBM's prediction reads them: within the zero threshold, exactly 0."""
    return np.where(np.abs(values) <= ZERO_THRESHOLD, 0.0, values)


def _goes_left(tree: dict[str, Any], s: int, values: np.ndarray) -> np.ndarray:
    """Whether each value goes left at split ``s`` of ``tree`` (LightGBM's rules)."""
    missing = np.isnan(values)
    if tree["categorical"][s]:
        # cut to a whole number as LightGBM casts it: -0.5 is category 0
        ok = ~missing & (values > -1.0)
        code = np.trunc(np.where(ok, values, -1.0))
        members = tree["sets"][s]
        return np.asarray(ok & np.isin(code, members), dtype=np.int64)
    kind = int(tree["missing"][s])
    if kind != _MISSING_NAN:
        values = np.where(missing, 0.0, values)
    left = values <= tree["threshold"][s]
    if kind == _MISSING_ZERO:
        left = np.where(np.abs(values) <= ZERO_THRESHOLD, tree["default_left"][s], left)
    elif kind == _MISSING_NAN:
        left = np.where(missing, tree["default_left"][s], left)
    return np.asarray(left, dtype=np.int64)


def _pair_goes_left(
    tree: dict[str, Any], s: int, values: np.ndarray, missing: np.ndarray, out: np.ndarray
) -> None:
    """:func:`_goes_left` of a numerical split on the pairs' values, into ``out``."""
    kind = int(tree["missing"][s])
    threshold = tree["threshold"][s]
    if tree["categorical"][s] or kind == _MISSING_ZERO:
        out[...] = _goes_left(tree, s, values) == 1
        return
    np.less_equal(values, threshold, out=out)
    # a missing value is 0 for a split without missing values, else goes the default way
    if kind == _MISSING_NAN:
        if tree["default_left"][s]:
            np.logical_or(out, missing, out=out)
    elif threshold >= 0.0:
        np.logical_or(out, missing, out=out)
