"""A few posted leads are typed cell by cell: the very frame the full checks give, or the full
checks themselves (and their messages) for any cell that is not plainly valid."""

from __future__ import annotations

import random
from typing import Any

import pandas as pd
import pytest

from features.contract import ContractError
from serving import service


def _full(records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    with monkeypatch.context() as m:
        m.setattr(service, "SMALL_REQUEST_ROWS", 0)
        return service.leads_from_records(records)


def _lead(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "lead_id": f"L-{i:05d}",
        "account_id": rng.choice(["ACC-1", " ACC-2 ", None, "Müller GmbH"]),
        "created_at": rng.choice(["2026-03-14", "2026-03-14T09:30:00", None, " 2025-12-31 "]),
        "employees": rng.choice([4033.0, 12, "950", " 1e3 ", None, rng.random() * 1e6, 0.1 + 0.2]),
        "annual_revenue": rng.choice([745258000.0, rng.uniform(0, 1e9), "12500.50", None]),
        "industry": rng.choice(["Software", "Financial Services", "", None]),
        "signal_type": rng.choice(["hiring", None]),
        "title": rng.choice(["VP, Sales", "Director of Marketing", "  Head of IT\t"]),
        "do_not_contact": rng.choice([True, False, None, "yes", "0", " TRUE "]),
        "last_contacted_at": rng.choice(["2025-12-11T00:00:00", None]),
        "custom_note": rng.choice(["hot", " ", None]),
    }


def test_small_requests_are_typed_as_the_full_checks_type_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(11)
    fast = 0
    for trial in range(200):
        records = [_lead(rng, trial * 10 + k) for k in range(rng.randint(1, 5))]
        if trial % 7 == 0:
            records[0].pop("employees")  # a key left out of one lead
        small = service._small_leads_frame(records)
        expected = _full(records, monkeypatch)
        if small is not None:
            fast += 1
            pd.testing.assert_frame_equal(small, expected, check_exact=True)
        pd.testing.assert_frame_equal(service.leads_from_records(records), expected)
    assert fast == 200  # valid small requests do take the fast way


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("employees", "many"),
        ("employees", "nan"),
        ("created_at", "2026-02-30"),
        ("created_at", "14/03/2026"),
        ("created_at", "2026-03-14T09:30:00+02:00"),
        ("do_not_contact", "maybe"),
        ("do_not_contact", ""),
        ("lead_id", " "),
        ("lead_id", None),
        ("title", "\u00a0VP Sales"),
        ("custom_note", 7),
    ],
)
def test_a_doubtful_cell_takes_the_full_checks(
    field: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [{"lead_id": "L-1", "employees": 10, "created_at": "2026-03-14"}]
    records[0][field] = value
    assert service._small_leads_frame(records) is None
    try:
        expected: Any = _full(records, monkeypatch)
    except ContractError as exc:
        with pytest.raises(ContractError) as got:
            service.leads_from_records(records)
        assert str(got.value) == str(exc)
    else:
        pd.testing.assert_frame_equal(service.leads_from_records(records), expected)


def test_repeated_ids_are_refused_with_the_full_message(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [{"lead_id": "L-1"}, {"lead_id": " L-1"}]
    assert service._small_leads_frame(records) is None
    with pytest.raises(ContractError) as full:
        _full(records, monkeypatch)
    with pytest.raises(ContractError) as got:
        service.leads_from_records(records)
    assert str(got.value) == str(full.value)
    assert "rows 0, 1" in str(got.value)


def test_few_records_are_the_records_of_the_whole_frame_way() -> None:
    table = pd.DataFrame(
        {
            "lead_id": pd.array(["L-1", "L-2", None], dtype="string"),
            "plain_str": pd.Series(["a", None, "c"], dtype="str"),
            "sqo_probability": [0.25, float("nan"), float("inf")],
            "rank": pd.array([1, None, 3], dtype="Int64"),
            "count": [1, 2, 3],
            "flag": pd.array([True, None, False], dtype="boolean"),
            "np_flag": [True, False, True],
            "created_at": pd.to_datetime(
                ["2026-03-14", None, "2026-03-15T09:30:00"], format="ISO8601"
            ),
            "tier": pd.Categorical(["A", None, "B"]),
            "mixed": pd.Series([1, "x", None], dtype=object),
            "listed": pd.Series([[1], None, ["a", None]], dtype=object),
        }
    )
    whole = [
        {str(k): service._plain(v) for k, v in row.items()}
        for row in table.astype(object).where(table.notna(), None).to_dict("records")
    ]
    few = service._records(table)
    assert few == whole
    assert [[type(v) for v in r.values()] for r in few] == [
        [type(v) for v in r.values()] for r in whole
    ]
    assert service._records(table.iloc[:, :0]) == [{}, {}, {}]
