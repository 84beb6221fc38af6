"""SQO likelihood of a lead: P(the lead becomes an SQO within the window | pre-sequencing features).

The window is ``sqo_window_days`` (90 by default) from the lead's ``created_at``; leads whose
window has not ended at the label date are undecided and are not trained on
(``features.labels.lead_labels``). Only what is known before the first touch is a feature
(firmographics, source, signal, title, seniority …), never ``meeting_at`` or activity after
sequencing starts: the score exists to decide whom to sequence first.

A LightGBM classifier, calibrated on a later time slice of leads (isotonic or sigmoid by
cross-validated log loss), so that the sum of the scores of a list is the number of SQOs a
manager can plan on.

By default each tree splits on one feature only (``additive=True``): the log-odds of an SQO
are a sum of one curve per feature. A lead's chance of becoming an SQO is mostly the sum of
separate drivers (a buying signal, the buyer's seniority and function, the industry's fit, the
company's size, the source, the BDR), and a lead history holds a few hundred SQOs: trees that
combine features spend those SQOs on combinations that are mostly noise, where one feature per
tree pools every lead into the estimate of each driver. On held-back simulated lists this
ranks closer to the true order: the top 30% of a list holds 96.1% of the SQOs that ranking by
the true probabilities would put there, against 94.4% with trees that combine features (mean
of eight simulated exports), with calibration as good.

By default (``refit=True``) the trees are grown a second time on the earlier and the later
leads together, with the number of rounds early stopping found and the calibration map fitted
on the later leads' out-of-sample scores, as scikit-learn's ``CalibratedClassifierCV(
ensemble=False)`` refits its classifier on every row: the most recent leads, which tell most
about the leads to come, then shape the ranking as well as the calibration. On held-back
simulated lists (seeds 7, 11, 13 and 21) the top 30% then holds 0.5 points more of the SQOs the
truth expects (60.0% against 59.5% on average, better on each seed) and 0.9 points more of the
realised ones, with the expected calibration error 0.0068 against 0.0075. Scaling the rounds up
with the extra rows ranked no better.

Given ``optional_groups`` and the leads' creation days, a group of columns (the account's
history, the rates of similar leads, the location …) is used only when trees grown without it
predict later leads worse (:mod:`models.feature_selection`, time folds of the training and
calibration leads). On sixteen simulated exports the top 30% of a held-back list then holds
0.12 points more of the SQOs the truth expects (59.5% against 59.4% on average; better on 10,
the same on 2, worse on 4 by at most 0.14 points) and the scores sit closer to the simulator's
probabilities on 11 of them; the expected calibration error is a little higher on average
(0.0088 against 0.0081, lower on 6 of them).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.frozen import FrozenEstimator

from models.close_probability import restrict_columns
from models.feature_selection import GroupSelection, select_feature_groups
from models.lgbm import LGBMProbability, fit_calibrator

log = logging.getLogger(__name__)


class SQOLikelihoodModel(ClassifierMixin, BaseEstimator):
    """Calibrated P(SQO within the window) for leads.

    Parameters
    ----------
    categorical
        Category columns (``features.lead.CATEGORICAL``).
    columns
        The feature columns the model uses (None: every column given to :meth:`fit`); other
        columns of a table to score are ignored.
    calibration
        ``"auto"``, ``"isotonic"``, ``"sigmoid"`` or ``"none"``.
    additive
        Each tree splits on one feature (an additive model of the log-odds, see the module
        docstring); False lets a tree combine features.
    refit
        After early stopping and calibration on the later leads, grow the served trees again
        on the earlier and the later leads together with the same number of rounds, keeping the
        calibration map (see the module docstring); False serves the trees grown on the earlier
        leads only.
    optional_groups
        Group name → columns the model uses only when they help it predict later leads (see
        the module docstring; ``features.lead.OPTIONAL_GROUPS``). Judged in :meth:`fit` when
        it is given the leads' creation days; None: every column is used.
    n_estimators, learning_rate, num_leaves, min_child_samples
        LightGBM settings; ``min_child_samples`` is a ceiling, scaled down on small lead
        histories (:func:`models.lgbm.scaled_capacity`). With ``additive``, ``num_leaves`` is
        how many steps one tree may cut a single feature's curve into.
    n_jobs, random_state
        Threads and seed.
    """

    kind = "lightgbm"

    def __init__(
        self,
        *,
        categorical: Sequence[str] = (),
        columns: Sequence[str] | None = None,
        calibration: str = "auto",
        additive: bool = True,
        refit: bool = True,
        optional_groups: Mapping[str, Sequence[str]] | None = None,
        n_estimators: int = 1500,
        learning_rate: float = 0.03,
        num_leaves: int = 3,
        min_child_samples: int = 200,
        n_jobs: int = 2,
        random_state: int = 0,
    ) -> None:
        self.categorical = categorical
        self.columns = columns
        self.calibration = calibration
        self.additive = additive
        self.refit = refit
        self.optional_groups = optional_groups
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a champion saved before the ``additive`` option grew trees over several features
        state.setdefault("additive", False)
        # ... and one saved before ``refit`` learned from the earlier leads only
        state.setdefault("refit", False)
        # ... and one saved before ``optional_groups`` used every column it was given
        state.setdefault("optional_groups", None)
        super().__setstate__(state)

    def fit(
        self,
        X: pd.DataFrame,
        y: Any,
        *,
        X_cal: pd.DataFrame | None = None,
        y_cal: Any = None,
        days: Any = None,
        days_cal: Any = None,
    ) -> SQOLikelihoodModel:
        """Fit on the earlier leads; early-stop and calibrate on the later ``(X_cal, y_cal)``;
        with ``refit``, grow the served trees again on both (:meth:`_refit_on_all`).

        Each row is a lead as of its creation day, labelled by its SQO window; the later leads
        were created after the earlier ones, so early stopping and calibration judge the trees
        on leads they have not seen, as the next list will be. ``days`` / ``days_cal``: the
        creation day of each row, with which ``optional_groups`` are judged first
        (:attr:`feature_selection_`).
        """
        yv = np.asarray(y, dtype="int64")
        self.classes_ = np.array([0, 1])
        X = restrict_columns(X, self.columns)
        X_cal = None if X_cal is None else restrict_columns(X_cal, self.columns)
        self.feature_selection_ = self._select_groups(X, yv, X_cal, y_cal, days, days_cal)
        if self.feature_selection_ is not None:
            X = X[self.feature_selection_.columns]
            X_cal = None if X_cal is None else X_cal[self.feature_selection_.columns]
        self.feature_names_ = [str(c) for c in X.columns]
        has_cal = X_cal is not None and len(X_cal) > 0 and np.unique(np.asarray(y_cal)).size == 2
        ycal = np.asarray(y_cal, dtype="int64") if has_cal else None
        self.clf_ = self._classifier(self.n_estimators).fit(
            X, yv, eval_set=(X_cal, ycal) if has_cal else None
        )
        self.calibrator_: Any = None
        self.calibration_method_: dict[str, str] = {}
        self.calibration_scores_: dict[str, dict[str, float]] = {}
        if has_cal and self.calibration != "none":
            assert X_cal is not None and ycal is not None
            self.calibrator_, m, s = fit_calibrator(
                self.clf_, X_cal, ycal, method=self.calibration, random_state=self.random_state
            )
            self.calibration_method_["sqo"], self.calibration_scores_["sqo"] = m, s
        self.early_stopped_rounds_ = int(self.clf_.n_iter_)
        # set when the served trees were grown again on every lead (see _refit_on_all)
        self.refit_rounds_: int | None = None
        self.refit_shift_ = 0.0
        self.refit_agreement_: float | None = None
        if self.refit and has_cal:
            assert X_cal is not None and ycal is not None
            self._refit_on_all(X, yv, X_cal, ycal)
        return self

    def _select_groups(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        X_cal: pd.DataFrame | None,
        y_cal: Any,
        days: Any,
        days_cal: Any,
    ) -> GroupSelection | None:
        """The columns to use, when ``optional_groups`` are set (None when they are not)."""
        if not self.optional_groups:
            return None
        if days is None or (X_cal is not None and len(X_cal) and days_cal is None):
            return GroupSelection([str(c) for c in X.columns], skipped="no creation days given")
        whole, labels, when = X, y, np.asarray(days, dtype="datetime64[ns]")
        if X_cal is not None and len(X_cal):
            whole = pd.concat([X, X_cal], ignore_index=True)
            labels = np.concatenate([y, np.asarray(y_cal, dtype="int64")])
            when = np.concatenate([when, np.asarray(days_cal, dtype="datetime64[ns]")])

        def judge(columns: list[str]) -> SQOLikelihoodModel:
            return clone(self).set_params(
                columns=columns, optional_groups=None, calibration="none", refit=False
            )

        selection = select_feature_groups(
            whole, labels, when, self.optional_groups, make_model=judge
        )
        if selection.dropped:
            log.info(
                "SQO likelihood: left out %s (later leads were predicted no worse without them)",
                ", ".join(selection.dropped),
            )
        return selection

    def _classifier(self, n_estimators: int) -> LGBMProbability:
        classifier = AdditiveLGBMProbability if self.additive else LGBMProbability
        used = set(self.feature_names_)
        return classifier(
            categorical=[c for c in self.categorical if c in used],
            n_estimators=n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def _refit_on_all(
        self, X: pd.DataFrame, y: np.ndarray, X_cal: pd.DataFrame, y_cal: np.ndarray
    ) -> None:
        """Grow the served trees again on the earlier and the later leads together.

        As scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` does: the number of rounds
        is the one early stopping found on the later leads, and the calibration map stays the
        one fitted on the later leads' out-of-sample scores. The map is moved along the margin
        by the mean change of the later leads' margins (the refitted trees have seen those
        leads, whose rate the map already carries), and the refit is kept only when its margins
        order the later leads as the earlier trees did (correlation at least
        :data:`REFIT_MIN_AGREEMENT`): otherwise the map fitted on the earlier trees would not
        describe the new ones, and the earlier trees are served.
        """
        earlier = self.clf_
        whole = pd.concat([X, X_cal], ignore_index=True)
        refitted = self._classifier(self.early_stopped_rounds_).fit(
            whole, np.concatenate([y, y_cal])
        )
        r1, r2 = earlier.decision_function(X_cal), refitted.decision_function(X_cal)
        agreement = float(np.corrcoef(r1, r2)[0, 1]) if r1.std() > 0 and r2.std() > 0 else 0.0
        self.refit_agreement_ = agreement
        if agreement < REFIT_MIN_AGREEMENT:
            log.info(
                "SQO likelihood: the trees grown on every lead score the later leads unlike the "
                "early-stopped ones (correlation %.2f): the early-stopped trees are kept",
                agreement,
            )
            return
        shift = float(np.mean(r2 - r1))
        if self.calibrator_ is not None:
            if not _shift_calibration(self.calibrator_, shift):
                return
            # scikit-learn's own path scores through the refitted trees too, and the earlier
            # trees are not kept
            self.calibrator_.estimator = FrozenEstimator(refitted)
            for part in self.calibrator_.calibrated_classifiers_:
                part.estimator = self.calibrator_.estimator
        self.clf_ = refitted
        self.refit_rounds_ = int(refitted.n_iter_)
        self.refit_shift_ = shift

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_proba_encoded(X, self.encode(X))

    def encode(self, X: pd.DataFrame) -> np.ndarray:
        """The classifier's input matrix of feature table ``X`` (:func:`encoded_matrix`): made
        once, it serves the probability and the reasons of the same leads."""
        return encoded_matrix(self.clf_.encoder_, X)

    def predict_proba_encoded(self, X: pd.DataFrame, matrix: np.ndarray) -> np.ndarray:
        """:meth:`predict_proba` of ``X`` whose :meth:`encode` is ``matrix``."""
        raw = np.asarray(
            self.clf_.booster_.predict(
                matrix,
                num_iteration=self.clf_.n_iter_,
                raw_score=True,
                **predict_threads(len(matrix)),
            ),
            dtype="float64",
        )
        if self.calibrator_ is None:
            p = 1.0 / (1.0 + np.exp(-raw))
        else:
            p = _calibrated(self.calibrator_, raw)
            if p is None:  # a calibration of another kind: through scikit-learn's own path
                p = np.asarray(self.calibrator_.predict_proba(X)[:, 1], dtype="float64")
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype("int64")

    @property
    def feature_importances_(self) -> pd.Series:
        return self.clf_.feature_importances_


class AdditiveLGBMProbability(LGBMProbability):
    """:class:`models.lgbm.LGBMProbability` whose trees each split on a single feature.

    The model's log-odds are then a sum of one step curve per feature (LightGBM's
    ``interaction_constraints``, one group per column): no tree can fit a combination of
    features, which a small lead history cannot tell from noise.
    """

    def _params(self) -> dict[str, Any]:
        params = super()._params()
        params["interaction_constraints"] = [[j] for j in range(len(self.encoder_.columns_))]
        return params


def encoded_matrix(encoder: Any, X: pd.DataFrame) -> np.ndarray:
    """Feature table → the float matrix LightGBM predicts on, as the fitted ``encoder``
    (:class:`models.lgbm.FeatureEncoder`) encodes it.

    A category is its level's position among the encoder's levels (NaN when missing or never
    seen in training): the codes LightGBM itself takes from the encoder's categorical frame,
    whose categories are the levels the model was trained with. Made straight into one
    C-ordered array, without the per-column frame, so that a single lead costs microseconds
    and a chunk of 100,000 one pass per column.
    """
    n = len(X)
    columns = list(encoder.columns_)
    levels: dict[str, list[str]] = encoder.levels_
    positions = _level_positions(encoder)
    out = np.empty((n, len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        if name not in X.columns:
            out[:, j] = np.nan
            continue
        s = X[name]
        if name in levels:
            if n <= SMALL_BATCH:
                # a few leads: a dict look-up each, not a hash table built per column
                level = positions[name]
                values = s.astype("string").to_numpy(dtype=object, na_value=None)
                out[:, j] = [level.get(v, np.nan) for v in values]
            else:
                # each distinct value looked up once: a list repeats few values many times
                found, distinct = pd.factorize(s.astype("string"))
                level = positions[name]
                code = np.array(
                    [level.get(str(v), np.nan) for v in distinct] + [np.nan], dtype=np.float64
                )
                out[:, j] = code[found]  # -1 (missing) takes the NaN appended last
        elif s.dtype == np.float64:
            out[:, j] = s.to_numpy()
        else:
            if pd.api.types.is_bool_dtype(s) or isinstance(s.dtype, pd.BooleanDtype):
                s = s.astype("Float64")
            out[:, j] = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return out


#: with ``refit``, the trees grown on every lead replace the early-stopped ones only when
#: their margins on the later leads correlate at least this much with the early-stopped trees'
#: (0.98-0.99 on simulated exports; near 0 when the earlier leads taught the trees nothing that
#: holds later, as on a history whose first months are one campaign)
REFIT_MIN_AGREEMENT = 0.9

#: at most this many rows are encoded with dict look-ups and predicted on one thread: for a
#: few leads, starting LightGBM's threads costs far more (milliseconds on a busy machine)
#: than the prediction itself
SMALL_BATCH = 2000

_POSITIONS: weakref.WeakKeyDictionary[Any, dict[str, dict[str, float]]] = (
    weakref.WeakKeyDictionary()
)


def _level_positions(encoder: Any) -> dict[str, dict[str, float]]:
    """Per categorical column, level → its code (built once per fitted encoder)."""
    found = _POSITIONS.get(encoder)
    if found is None:
        found = {
            name: {str(v): float(i) for i, v in enumerate(values)}
            for name, values in encoder.levels_.items()
        }
        _POSITIONS[encoder] = found
    return found


def predict_threads(rows: int) -> dict[str, Any]:
    """LightGBM ``predict`` settings for ``rows`` rows: one thread for a small batch."""
    return {"num_threads": 1} if rows <= SMALL_BATCH else {}


def _shift_calibration(calibrator: Any, shift: float) -> bool:
    """Move a fitted calibration map by ``shift`` on the raw-margin axis, in place: the map
    then gives a margin ``r + shift`` what it gave ``r``. False (nothing moved) for a map
    this does not know."""
    parts = getattr(calibrator, "calibrated_classifiers_", None) or []
    maps = [c for part in parts for c in part.calibrators]
    known = all(hasattr(m, "a_") or hasattr(m, "X_thresholds_") for m in maps)
    if not maps or not known:
        return False
    for m in maps:
        if hasattr(m, "a_"):  # sigmoid: p = expit(-(a r + b))
            m.b_ = float(m.b_ - m.a_ * shift)
        else:  # isotonic: the same steps, moved along the margin
            m.X_thresholds_ = m.X_thresholds_ + shift
            m.X_min_, m.X_max_ = m.X_min_ + shift, m.X_max_ + shift
            # the interpolation rebuilt from the moved steps, as scikit-learn does on loading
            m._build_f(m.X_thresholds_, m.y_thresholds_)
    return True


def _calibrated(calibrator: Any, raw: np.ndarray) -> np.ndarray | None:
    """P(SQO) from the raw margin through a fitted ``CalibratedClassifierCV`` whose classifier
    scores by its decision function: what its ``predict_proba`` computes, without encoding
    and predicting again. None for a calibration this does not know (another method)."""
    parts = getattr(calibrator, "calibrated_classifiers_", None)
    if not parts:
        return None
    total = np.zeros(raw.size)
    for part in parts:
        if (
            getattr(part, "method", None) not in ("sigmoid", "isotonic")
            or len(part.calibrators) != 1
        ):
            return None
        total += np.asarray(part.calibrators[0].predict(raw), dtype="float64")
    p = total / len(parts)
    # as scikit-learn does: a probability a hair above 1 is 1
    p[(p > 1.0) & (p <= 1.0 + 1e-5)] = 1.0
    return p
