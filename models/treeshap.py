"""TreeSHAP of many rows at once for a LightGBM booster, from each tree's decision patterns.

The numbers are LightGBM's own (``booster.predict(X, pred_contrib=True)``, path-dependent
TreeSHAP weighted by the training counts of the nodes), computed another way for speed when a
whole pipeline is explained:

* in one tree, what a row contributes depends only on which way it goes at each split
  (left or right), not on its values themselves. A pipeline of thousands of deals takes a few
  hundred distinct ways through a tree of 15 leaves, so each tree is worked out once per
  distinct way, not once per row;
* a leaf adds to the feature ``j`` on its path
  ``v · (o_j − z_j) · Σ_S |S|! (d − |S| − 1)! / d! · Π_{f∈S} o_f · Π_{f∉S, f≠j} z_f`` over the
  sets ``S`` of the path's other features, where ``v`` is the leaf's value, ``d`` the number
  of distinct features on the path, ``z_f`` the share of training rows that follow the path at
  the splits on ``f`` and ``o_f`` whether the row does (0 or 1). That depends on the row only
  through its ``o`` pattern (``2^d`` of them, ``d`` ≤ the depth): every leaf's contributions
  for every pattern are tabulated once per model.

The rows' ways through the trees follow LightGBM's own split rules (missing values, zero as
missing, category sets); :meth:`PatternTreeShap.contributions` also returns the leaf each row
reaches in each tree, so that a caller can check it against ``pred_leaf`` and fall back to
LightGBM when they differ. The sums are taken in another order than LightGBM's: the numbers
agree to about 1e-15 of their size, not bit for bit.

Numbers only: no I/O here. Time meaning: none of its own (it explains the rows it is given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

#: LightGBM's threshold under which a value counts as zero (``kZeroThreshold``, a float)
ZERO_THRESHOLD = float(np.float32(1e-35))
#: decision type bits of LightGBM's model text
_CATEGORICAL, _DEFAULT_LEFT = 1, 2
_MISSING_ZERO, _MISSING_NAN = 1, 2
#: rows explained per block: its arrays (rows × every split of every tree) stay small enough to
#: be reused from the heap rather than mapped afresh, page by page, on every call
BLOCK_ROWS = 1_024


@dataclass
class _TreeTables:
    """One tree's splits and leaves, as arrays."""

    nodes: slice  # its internal nodes among all the booster's
    n_leaves: int
    # per (leaf, feature on its path), leaves in order: the split bits and the bits wanted
    pair_mask: np.ndarray
    pair_want: np.ndarray
    pair_bit: np.ndarray  # the feature's bit within its leaf's pattern
    pair_leaf_starts: np.ndarray  # where each leaf's pairs start
    pair_index_base: np.ndarray  # each pair's row in the flat table for pattern 0
    pair_width: np.ndarray  # each pair's leaf's number of features (the table's row stride)
    used: np.ndarray  # the features on any of its paths
    pair_onehot: np.ndarray  # (pairs, used): the used feature of each pair
    # per leaf, every split on its path: the bits and the bits wanted (to name the leaf)
    leaf_mask: np.ndarray
    leaf_want: np.ndarray


class PatternTreeShap:
    """Exact TreeSHAP of a LightGBM booster's trees, weighted per class, for many rows.

    Parameters
    ----------
    booster
        A LightGBM booster of plain (not linear) trees.
    num_iteration
        Iterations used (the first follows).
    class_weights
        A multiplier per class of the booster (its trees in iteration order cycle through the
        classes): ``(1, -1)`` gives the contributions to class 0's raw score minus class 1's.
        One per class; default 1 for every class.

    Raises
    ------
    ValueError
        The booster's text is not the tree format this reads (linear trees, unknown fields).
    """

    def __init__(
        self,
        booster: lgb.Booster,
        *,
        num_iteration: int,
        class_weights: tuple[float, ...] | None = None,
    ) -> None:
        per_iteration = booster.num_model_per_iteration()
        weights = class_weights or (1.0,) * per_iteration
        if len(weights) != per_iteration:
            raise ValueError(f"{len(weights)} class weights for {per_iteration} classes")
        self.n_features = booster.num_feature()
        blocks = tree_blocks(booster.model_to_string(num_iteration=num_iteration))
        self.n_trees = len(blocks)
        features: list[int] = []
        thresholds: list[float] = []
        kinds: list[int] = []
        category_sets: list[np.ndarray] = []
        self.trees: list[_TreeTables] = []
        leaf_z: list[np.ndarray] = []
        leaf_value: list[float] = []
        self._table_size = 0
        for t, block in enumerate(blocks):
            tree = parse_tree(block)
            start = len(features)
            n_internal = tree["num_leaves"] - 1
            cat_bounds = tree.get("cat_boundaries", np.zeros(1, dtype=np.int64)).astype(np.int64)
            cat_words = tree.get("cat_threshold", np.zeros(0, dtype=np.int64)).astype(np.int64)
            for k in range(n_internal):
                kind = int(tree["decision_type"][k])
                features.append(int(tree["split_feature"][k]))
                kinds.append(kind)
                if kind & _CATEGORICAL:
                    at = int(tree["threshold"][k])
                    words = cat_words[cat_bounds[at] : cat_bounds[at + 1]]
                    bits = (words[:, None] >> np.arange(32)[None, :]) & 1
                    category_sets.append(np.flatnonzero(bits.ravel()))
                    thresholds.append(float(len(category_sets) - 1))
                else:
                    thresholds.append(float(tree["threshold"][k]))
            weight = float(weights[t % per_iteration])
            self.trees.append(
                self._tables(tree, slice(start, start + n_internal), weight, leaf_z, leaf_value)
            )
        self._feature = np.asarray(features, dtype=np.int64)
        self._threshold = np.asarray(thresholds, dtype="float64")
        kind_array = np.asarray(kinds, dtype=np.int64)
        self._categorical = (kind_array & _CATEGORICAL) != 0
        self._default_left = (kind_array & _DEFAULT_LEFT) != 0
        self._missing = (kind_array >> 2) & 3
        self._missing_left = np.where(
            self._missing == _MISSING_NAN, self._default_left, self._threshold >= 0.0
        )
        # a category set as a row of a boolean table: category code → goes left
        width = 1 + max((int(s.max()) + 1 for s in category_sets if s.size), default=0)
        self._category_left = np.zeros((max(len(category_sets), 1), width), dtype=bool)
        for i, s in enumerate(category_sets):
            self._category_left[i, s] = True
        self._table = _leaf_tables(leaf_z, leaf_value)

    def _tables(
        self,
        tree: dict[str, Any],
        nodes: slice,
        weight: float,
        leaf_z: list[np.ndarray],
        leaf_value: list[float],
    ) -> _TreeTables:
        """The pair and leaf arrays of one tree; its leaves' z and weighted values appended."""
        n_leaves = int(tree["num_leaves"])
        masks: list[int] = []
        wants: list[int] = []
        bits: list[int] = []
        starts: list[int] = []
        bases: list[int] = []
        widths: list[int] = []
        feats: list[int] = []
        leaf_masks = np.zeros(n_leaves, dtype=np.int64)
        leaf_wants = np.zeros(n_leaves, dtype=np.int64)
        if n_leaves > 1:
            left, right = tree["left_child"], tree["right_child"]
            counts = tree["internal_count"].astype("float64")
            leaf_counts = tree["leaf_count"].astype("float64")
            feature = tree["split_feature"]
            # depth-first walk: (node, path of (split, went left, feature, share of rows))
            stack: list[tuple[int, list[tuple[int, bool, int, float]]]] = [(0, [])]
            paths: dict[int, list[tuple[int, bool, int, float]]] = {}
            while stack:
                node, path = stack.pop()
                for child, went_left in ((int(left[node]), True), (int(right[node]), False)):
                    share = (counts[child] if child >= 0 else leaf_counts[~child]) / counts[node]
                    step = [*path, (node, went_left, int(feature[node]), float(share))]
                    if child >= 0:
                        stack.append((child, step))
                    else:
                        paths[~child] = step
            for leaf in range(n_leaves):
                path = paths[leaf]
                order: list[int] = []
                mask: dict[int, int] = {}
                want: dict[int, int] = {}
                z: dict[int, float] = {}
                for node, went_left, f, share in path:
                    if f not in mask:
                        order.append(f)
                        mask[f], want[f], z[f] = 0, 0, 1.0
                    mask[f] |= 1 << node
                    want[f] |= (1 << node) if went_left else 0
                    z[f] *= share
                    leaf_masks[leaf] |= 1 << node
                    leaf_wants[leaf] |= (1 << node) if went_left else 0
                starts.append(len(masks))
                base = self._table_size
                self._table_size += 2 ** len(order) * len(order)
                for b, f in enumerate(order):
                    masks.append(mask[f])
                    wants.append(want[f])
                    bits.append(1 << b)
                    bases.append(base + b)
                    widths.append(len(order))
                    feats.append(f)
                leaf_z.append(np.array([z[f] for f in order]))
                leaf_value.append(weight * float(tree["leaf_value"][leaf]))
        return _TreeTables(
            nodes=nodes,
            n_leaves=n_leaves,
            pair_mask=np.asarray(masks, dtype=np.int64),
            pair_want=np.asarray(wants, dtype=np.int64),
            pair_bit=np.asarray(bits, dtype=np.int64),
            pair_leaf_starts=np.asarray(starts, dtype=np.int64),
            pair_index_base=np.asarray(bases, dtype=np.int64),
            pair_width=np.asarray(widths, dtype=np.int64),
            used=np.unique(np.asarray(feats, dtype=np.int64)),
            pair_onehot=(
                np.asarray(feats, dtype=np.int64)[:, None] == np.unique(feats)[None, :]
            ).astype("float64"),
            leaf_mask=leaf_masks,
            leaf_want=leaf_wants,
        )

    def goes_left(self, X: np.ndarray) -> np.ndarray:
        """(rows, splits of all trees): whether each row goes left at each split.

        LightGBM's rules: a missing value is 0 unless the split treats missing values apart;
        a split that does sends missing values (or zeros, for zero-as-missing) its default
        way; a category split sends left the categories of its set, and right a missing or
        negative value.
        """
        X = np.asarray(X, dtype="float64")
        values = X[:, self._feature]
        missing = np.isnan(values)
        left = values <= self._threshold  # false for a missing value
        # a missing value: 0 where missing values are not set apart (left if 0 ≤ threshold),
        # else the default way (zero-as-missing splits read it as 0, a missing value too)
        left |= missing & self._missing_left
        zero = np.flatnonzero(self._missing == _MISSING_ZERO)
        if zero.size:
            part = values[:, zero]
            as_missing = (np.abs(part) <= ZERO_THRESHOLD) | np.isnan(part)
            left[:, zero] = np.where(as_missing, self._default_left[zero], left[:, zero])
        cats = np.flatnonzero(self._categorical)
        if cats.size:
            raw = X[:, self._feature[cats]]
            width = self._category_left.shape[1]
            # a category's code is its value cut to a whole number, as LightGBM casts it
            # (-0.5 is category 0); past the last category of every set: never left
            ok = np.isfinite(raw) & (raw > -1.0) & (raw < width - 1)
            code = np.where(ok, np.trunc(np.where(ok, raw, 0.0)), width - 1).astype(np.int64)
            sets = self._threshold[cats].astype(np.int64)
            left[:, cats] = self._category_left[sets[None, :], code]
        return np.asarray(left, dtype=bool)

    def contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's weighted TreeSHAP contribution per feature, and the leaf it reaches.

        Parameters
        ----------
        X
            Rows as the booster reads them (float64, one column per booster feature).

        Returns
        -------
        (contributions (rows, features), leaves (rows, trees))
            The contributions without the bias column; ``leaves`` as ``pred_leaf`` gives them.
        """
        X = np.asarray(X, dtype="float64")
        n = len(X)
        out = np.zeros((n, self.n_features))
        leaves = np.zeros((n, self.n_trees), dtype=np.int64)
        # each row's way through each tree (bit k: left at the tree's split k), block by block
        codes = np.zeros((self.n_trees, n), dtype=np.int64)
        for start in range(0, n, BLOCK_ROWS):
            stop = min(n, start + BLOCK_ROWS)
            left = self.goes_left(X[start:stop])
            for t, tree in enumerate(self.trees):
                if tree.n_leaves > 1:
                    ways = left[:, tree.nodes].astype(np.int64)
                    codes[t, start:stop] = ways @ (np.int64(1) << np.arange(ways.shape[1]))
        # then each tree worked out once per distinct way of all the rows
        for t, tree in enumerate(self.trees):
            if tree.n_leaves < 2:
                continue  # a single leaf adds to the bias alone
            distinct, inverse = np.unique(codes[t], return_inverse=True)
            reached = (distinct[:, None] & tree.leaf_mask[None, :]) == tree.leaf_want[None, :]
            leaves[:, t] = np.argmax(reached, axis=1)[inverse]
            # o_f of every (leaf, feature) pair, then each leaf's pattern number
            agree = (distinct[:, None] & tree.pair_mask[None, :]) == tree.pair_want[None, :]
            pattern = np.add.reduceat(agree * tree.pair_bit[None, :], tree.pair_leaf_starts, axis=1)
            per_pair = np.repeat(pattern, np.diff(np.r_[tree.pair_leaf_starts, agree.shape[1]]), 1)
            values = self._table[
                tree.pair_index_base[None, :] + per_pair * tree.pair_width[None, :]
            ]
            out[:, tree.used] += (values @ tree.pair_onehot)[inverse]
        return out, leaves


def tree_blocks(text: str) -> list[str]:
    """The text of each tree of a LightGBM model text (``Booster.model_to_string``)."""
    head, found, rest = text.partition("\nTree=0\n")
    body, end, _ = rest.partition("end of trees")
    if not found or not end:
        raise ValueError("not a LightGBM model text")
    parts = ("Tree=0\n" + body).split("\n\n")
    return [p for p in (part.strip() for part in parts) if p.startswith("Tree=")]


_INT_FIELDS = {
    "split_feature",
    "decision_type",
    "left_child",
    "right_child",
    "leaf_count",
    "internal_count",
    "cat_boundaries",
    "cat_threshold",
}
_FLOAT_FIELDS = {"threshold", "leaf_value"}


def parse_tree(block: str) -> dict[str, Any]:
    """One tree's fields as arrays (``num_leaves``, ``split_feature``, ``threshold`` …).

    Raises ``ValueError`` for a linear tree or a tree text without the fields read here.
    """
    fields = dict(line.split("=", 1) for line in block.splitlines()[1:] if "=" in line)
    if fields.get("is_linear", "0") != "0":
        raise ValueError("linear trees are not explained this way")
    tree: dict[str, Any] = {"num_leaves": int(fields["num_leaves"])}
    for name in _INT_FIELDS | _FLOAT_FIELDS:
        if name in fields and fields[name].strip():
            kind = np.int64 if name in _INT_FIELDS else np.float64
            tree[name] = np.array(fields[name].split(), dtype=kind)
    needed = ["leaf_value"] + (
        ["split_feature", "decision_type", "left_child", "right_child", "threshold"]
        + ["leaf_count", "internal_count"]
        if tree["num_leaves"] > 1
        else []
    )
    missing = [name for name in needed if name not in tree]
    if missing:
        raise ValueError(f"tree text without {', '.join(missing)}")
    return tree


def _leaf_tables(leaf_z: list[np.ndarray], leaf_value: list[float]) -> np.ndarray:
    """Every leaf's contributions for every pattern, flat: leaf by leaf, pattern by pattern,
    one value per feature on the leaf's path (leaves grouped by path length to compute)."""
    sizes = np.array([2 ** len(z) * len(z) for z in leaf_z], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(sizes)]
    table = np.zeros(int(offsets[-1]))
    lengths = np.array([len(z) for z in leaf_z], dtype=np.int64)
    for d in np.unique(lengths).tolist():
        if d == 0:
            continue
        which = np.flatnonzero(lengths == d)
        Z = np.stack([leaf_z[i] for i in which])  # (leaves, d)
        V = np.array([leaf_value[i] for i in which])  # (leaves,)
        patterns = np.arange(2**d)
        follows = ((patterns[:, None] >> np.arange(d)[None, :]) & 1).astype("float64")  # (2^d, d)
        # Shapley weights |S|! (d − |S| − 1)! / d! by |S|
        w = np.array(
            [math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) for s in range(d)]
        )
        result = np.empty((len(which), 2**d, d))
        for j in range(d):
            # coefficients of Π_{f≠j} (z_f + o_f x): the weight of each size of S
            poly = np.zeros((len(which), 2**d, d))
            poly[:, :, 0] = 1.0
            for f in range(d):
                if f == j:
                    continue
                shifted = np.zeros_like(poly)
                shifted[:, :, 1:] = poly[:, :, :-1] * follows[None, :, f, None]
                poly = poly * Z[:, None, f, None] + shifted
            total = poly @ w
            result[:, :, j] = V[:, None] * (follows[None, :, j] - Z[:, j, None]) * total
        for k, i in enumerate(which.tolist()):
            table[offsets[i] : offsets[i + 1]] = result[k].ravel()
    return table
