"""Speed of scoring a lead list: bare model predict against the whole list step.

One process simulates the demo export, trains an SQO-likelihood model on it (not timed) and
builds a list of N leads (the export's leads repeated under new ids, not timed). It then times:
the lead features as of the export date, the bare ``predict_proba``, the reasons of every lead
(TreeSHAP and the phrases), and ``score_lead_list`` end to end without and with ``--top 5000``
(leads cut for their rank are not explained). Peak memory is the process's (``ru_maxrss``).
"""

from __future__ import annotations

import resource
import time
from typing import Any

#: name → leads in the list
SIZES: dict[str, int] = {"100k": 100_000}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(sizes: list[str] | None = None) -> list[dict[str, Any]]:
    import numpy as np

    from features import labels, lead, synthetic
    from models.sqo_likelihood import SQOLikelihoodModel

    sim = synthetic.simulate(seed=7, n_opportunities=16_000, n_leads=60_000)
    export = sim.export
    table = lead.build_training_set(export)
    lab = labels.lead_labels(export)
    decided = lab["decided"].reindex(table.index).to_numpy(dtype=bool, na_value=False)
    X = table.loc[decided].drop(columns=["as_of"]).reset_index(drop=True)
    y = lab.loc[table.index[decided], "is_sqo"].to_numpy(dtype=int)
    late = np.arange(len(X)) >= int(0.8 * len(X))
    model = SQOLikelihoodModel(categorical=lead.categorical_columns(X)).fit(
        X[~late], y[~late], X_cal=X[late].reset_index(drop=True), y_cal=y[late]
    )
    assert export.leads is not None
    rows: list[dict[str, Any]] = []
    for size in sizes or list(SIZES):
        rows.extend(_one_size(size, export, model))
    rows[-1]["note"] = (
        "lead list: score_lead_list includes the lead features; the reasons are TreeSHAP "
        "(LightGBM pred_contrib) plus one vectorised phrase per reason"
    )
    return rows


def _one_size(size: str, export: Any, model: Any) -> list[dict[str, Any]]:
    import pandas as pd

    from features import lead
    from models.explain import lead_reasons
    from serving.lead_list import ListRules
    from serving.scoring import score_lead_list

    n = SIZES[size]
    day = export.exported_at
    base = export.leads.drop(columns=["sqo_at", "meeting_at"])
    reps = -(-n // len(base))
    listed = pd.concat([base] * reps, ignore_index=True).head(n)
    listed["lead_id"] = pd.array([f"B-{i:07d}" for i in range(n)], dtype="string")
    rows: list[dict[str, Any]] = []

    def timed(step: str, func: Any) -> Any:
        start = time.perf_counter()
        result = func()
        rows.append(
            {
                "bench": "lead list",
                "size": size,
                "step": step,
                "rows": n,
                "seconds": time.perf_counter() - start,
                "peak_mb": _peak_mb(),
            }
        )
        return result

    features = timed("lead features", lambda: lead.build(export, as_of=day, leads=listed))
    timed("bare predict_proba", lambda: model.predict_proba(features))
    timed("reasons of every lead", lambda: lead_reasons(model, features))
    timed(
        "score_lead_list (all explained)",
        lambda: score_lead_list(model, listed, model_version="b", as_of=day, history=export),
    )
    timed(
        "score_lead_list --top 5000",
        lambda: score_lead_list(
            model, listed, model_version="b", as_of=day, history=export, rules=ListRules(top=5000)
        ),
    )
    return rows
