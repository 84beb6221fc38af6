"""The promotion gate: when a freshly trained model may take the ``champion`` alias.

A challenger is promoted only if, on the new test slice,

1. its Brier score beats the CRM stage-probability baseline's (otherwise the model adds nothing
   over what the CRM already shows), and
2. it is not worse than the current champion re-scored on the same rows by more than
   ``settings.gate_tolerance``.

A historical-baseline fallback (too little data to train) is promoted only when there is no
champion at all, so that serving has something to load; it never replaces a trained champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    """Whether the challenger becomes champion, and why in one sentence."""

    passed: bool
    reason: str

    @property
    def tag(self) -> str:
        """The value of the ``gate`` tag on the registered model version."""
        return f"{'passed' if self.passed else 'refused'}: {self.reason}"


def decide(
    *,
    challenger_brier: float,
    baseline_brier: float,
    champion_brier: float | None,
    tolerance: float,
    fallback: bool = False,
    champion_version: str | None = None,
    baseline_label: str = "the stage baseline",
) -> GateDecision:
    """Apply the gate.

    Parameters
    ----------
    challenger_brier
        Brier score of the new model on the test slice.
    baseline_brier
        Brier score of the CRM stage-probability baseline on the same rows.
    champion_brier
        Brier score of the current champion re-scored on the same rows (None: no champion).
    tolerance
        How much worse than the champion the challenger may be (Brier points).
    fallback
        The challenger is the historical baseline, trained because data was too thin.
    champion_version, baseline_label
        For the message.
    """
    champ = f"champion v{champion_version}" if champion_version else "the champion"
    if fallback:
        if champion_brier is None:
            return GateDecision(
                True,
                "too little data for a learned model; the historical baseline is promoted because no champion exists",
            )
        return GateDecision(False, f"too little data for a learned model; {champ} is kept")
    if not math.isfinite(challenger_brier):
        return GateDecision(
            False, "the test slice has no rows with a known outcome, so the model cannot be checked"
        )
    if math.isfinite(baseline_brier) and not challenger_brier < baseline_brier:
        return GateDecision(
            False,
            f"Brier {challenger_brier:.4f} does not beat {baseline_label}'s {baseline_brier:.4f}",
        )
    if (
        champion_brier is not None
        and math.isfinite(champion_brier)
        and challenger_brier > champion_brier + tolerance
    ):
        return GateDecision(
            False,
            f"Brier {challenger_brier:.4f} is worse than {champ}'s {champion_brier:.4f} on the same test rows by more than the tolerance {tolerance:g}",
        )
    if champion_brier is None:
        return GateDecision(
            True,
            f"Brier {challenger_brier:.4f} beats {baseline_label}'s {baseline_brier:.4f}; no champion yet",
        )
    return GateDecision(
        True,
        f"Brier {challenger_brier:.4f} beats {baseline_label}'s {baseline_brier:.4f} and is within {tolerance:g} of {champ}'s {champion_brier:.4f}",
    )
