"""The forecast document of a pipeline of thousands of deals: its deal lines built column by column
read as the deals do, and the strict-JSON pass changes only what JSON cannot hold."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from serving.forecast_schema import DealOut
from serving.forecasting import _deal_rows, jsonable


def _deals() -> pd.DataFrame:
    """Deal lines as ``_deal_lines`` types them, with every kind of gap a pipeline has."""
    return pd.DataFrame(
        {
            "opportunity_id": pd.array(["O-1", "O-2", "O-3"], dtype="string"),
            "p_win": [0.5, 0.25, 0.0],
            "p_win_in_period": [0.4, 0.1, 0.0],
            "expected_value": [40_000.0, 1_000.0, 0.0],
            "amount": [100_000.0, np.nan, 0.0],
            "stage": pd.array(["Proposal", pd.NA, "Discovery"], dtype="string"),
            "stage_probability": [0.5, np.nan, 0.1],
            "expected_close_date": pd.to_datetime(["2026-07-31", None, "2026-06-01"]),
            "close_in_period": [True, False, True],
            "category": pd.array(["best_case", "pipeline", "pipeline"], dtype="string"),
            "forecast_category": pd.array([pd.NA, "commit", pd.NA], dtype="string"),
            "flags": pd.array(
                ["no next step; close date pushed 3 times", "", pd.NA], dtype="string"
            ),
            "top_factors": pd.array(
                ["stage Proposal (+); amount 100k (\u2212)", pd.NA, "deal open 3 days (+)"],
                dtype="string",
            ),
            "change": pd.array(["", "probability up", ""], dtype="string"),
            "model_version": pd.array(["4", "4", "4"], dtype="string"),
        }
    )


def _one_by_one(deals: pd.DataFrame) -> list[dict[str, Any]]:
    """The lines read deal by deal, each cell on its own."""

    def parts(v: Any) -> list[str]:
        return [f for f in str("" if pd.isna(v) else v).split("; ") if f]

    def num(v: Any) -> float | None:
        return None if v != v else float(v)

    return [
        {
            "opportunity_id": str(r.opportunity_id),
            "p_win": float(r.p_win),
            "p_win_in_period": float(r.p_win_in_period),
            "expected_value": float(r.expected_value),
            "amount": num(r.amount),
            "stage": None if pd.isna(r.stage) else str(r.stage),
            "stage_probability": num(r.stage_probability),
            "expected_close_date": None
            if pd.isna(r.expected_close_date)
            else pd.Timestamp(r.expected_close_date).date().isoformat(),
            "category": str(r.category),
            "forecast_category": None if pd.isna(r.forecast_category) else str(r.forecast_category),
            "flags": parts(r.flags),
            "top_factors": parts(r.top_factors),
            "change": parts(r.change),
        }
        for r in deals.itertuples(index=False)
    ]


def test_deal_lines_read_as_each_deal_does() -> None:
    deals = _deals()
    rows = _deal_rows(deals)
    assert rows == _one_by_one(deals)
    assert rows[0]["flags"] == ["no next step", "close date pushed 3 times"]
    assert rows[1]["amount"] is None and rows[1]["stage"] is None
    assert rows[1]["expected_close_date"] is None and rows[1]["top_factors"] == []
    assert rows[2]["flags"] == [] and rows[2]["forecast_category"] is None
    assert all(type(r["p_win"]) is float for r in rows)
    for row in rows:  # what POST /forecast answers per deal
        DealOut.model_validate(row)
    assert _deal_rows(deals.iloc[:0]) == []


def test_jsonable_turns_what_json_cannot_hold_into_json() -> None:
    doc: dict[Any, Any] = {
        "n": np.int64(3),
        "x": np.float64(0.25),
        "gap": float("nan"),
        "inf": np.float64(np.inf),
        "flag": np.bool_(True),
        "pair": (1, np.float32(0.5)),
        7: "key",
        "deals": [{"p": 0.5, "amount": float("nan")}, {"p": 0.1, "amount": 10.0}],
    }
    out = jsonable(doc)
    assert out == {
        "n": 3,
        "x": 0.25,
        "gap": None,
        "inf": None,
        "flag": True,
        "pair": [1, 0.5],
        "7": "key",
        "deals": [{"p": 0.5, "amount": None}, {"p": 0.1, "amount": 10.0}],
    }
    assert type(out["n"]) is int and type(out["flag"]) is bool
    json.dumps(out, allow_nan=False)
    # the input is left as it was
    assert math.isnan(doc["deals"][0]["amount"]) and doc["pair"] == (1, np.float32(0.5))


def test_jsonable_returns_a_clean_document_as_it_is() -> None:
    deal = {"opportunity_id": "O-1", "p_win": 0.5, "flags": ["no next step"], "amount": None}
    doc: dict[str, Any] = {"as_of": "2026-06-14", "n_open_deals": 1, "ok": False, "deals": [deal]}
    out = jsonable(doc)
    assert out is doc and out["deals"][0] is deal
    dirty: dict[str, Any] = {"as_of": "2026-06-14", "deals": [deal, {"p_win": np.float64(0.2)}]}
    cleaned = jsonable(dirty)
    assert cleaned is not dirty and cleaned["deals"][0] is deal
    assert cleaned["deals"][1] == {"p_win": 0.2} and type(cleaned["deals"][1]["p_win"]) is float
