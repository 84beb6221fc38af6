"""Request and response bodies of ``POST /forecast`` (interface.md), for :mod:`serving.forecasting`.

The response mirrors the dict :func:`serving.forecasting.forecast_export` builds, so a router
can answer ``ForecastResponse.model_validate(result.response)``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ForecastRequest(BaseModel):
    """What to forecast; without inline tables the server's export is used."""

    period: str = Field(description="2026-Q3 (fiscal quarter), 2026-07 or 2026-07-01:2026-09-30")
    as_of: str | None = Field(default=None, description="YYYY-MM-DD; default: the export date")
    quota: float | None = Field(default=None, ge=0, description="the period's quota")
    group_by: str | None = Field(
        default=None, description="roll-up column: owner_id, segment, source, region, stage, …"
    )
    compare_to: str | None = Field(
        default=None, description="an earlier day: list what changed since (YYYY-MM-DD)"
    )
    commit_threshold: float = Field(default=0.7, ge=0, le=1)
    best_case_threshold: float = Field(default=0.4, ge=0, le=1)
    neglect_days: int = Field(default=30, ge=1, description="no activity in N days is a flag")
    change_points: float = Field(
        default=10.0, gt=0, le=100, description="with compare_to: p in period moved this much"
    )
    opportunities: list[dict[str, Any]] | None = Field(
        default=None, description="the pipeline inline (contract columns)"
    )
    stage_history: list[dict[str, Any]] | None = None
    activities: list[dict[str, Any]] | None = None


class PeriodOut(BaseModel):
    label: str
    start: str
    end: str


class Range(BaseModel):
    """An expected amount and its 10th, 50th and 90th percentiles."""

    expected: float
    p10: float
    p50: float
    p90: float


class GroupOut(BaseModel):
    """One roll-up row: won + open + new of the deals with this value."""

    group: str
    expected: float
    p10: float
    p50: float
    p90: float
    stage_weighted: float
    won_to_date: float
    open_expected: float
    expected_new: float
    n_deals: int = Field(description="open deals")


class DealOut(BaseModel):
    """One open deal."""

    opportunity_id: str
    p_win: float
    p_win_in_period: float
    expected_value: float
    amount: float | None = None
    stage: str | None = None
    stage_probability: float | None = None
    expected_close_date: str | None = None
    category: str = Field(description="commit / best_case / pipeline, from p_win_in_period")
    forecast_category: str | None = Field(default=None, description="the CRM's, as of as_of")
    flags: list[str]
    top_factors: list[str]
    change: list[str] = Field(default_factory=list, description="since compare_to")


class ChangeOut(BaseModel):
    """A change since ``compare_to``."""

    opportunity_id: str
    change: str = Field(
        description="won, lost, new, moved into period, moved out of period, "
        "probability up, probability down"
    )
    detail: str
    amount: float | None = None
    p_before: float | None = None
    p_after: float | None = None


class NewBusinessSegment(BaseModel):
    segment: str
    expected_deals: float
    mean_amount: float
    expected: float
    past_counts: list[int]


class NewBusinessOut(BaseModel):
    """Deals not yet created that will be created and won in the period."""

    expected: float
    past_periods: list[str]
    note: str | None = None
    segments: list[NewBusinessSegment]


class CategoryRow(BaseModel):
    category: str | None = None
    forecast_category: str | None = None
    n_deals: int
    amount: float
    expected: float


class CategoriesOut(BaseModel):
    thresholds: dict[str, float]
    model: list[CategoryRow]
    crm: list[CategoryRow] | None = None


class MethodOut(BaseModel):
    distribution: str = Field(description="exact or monte_carlo")
    draws: int


class ForecastResponse(BaseModel):
    """The forecast of a period (interface.md): open deals, won, new, total, roll-up, deals."""

    as_of: str
    period: PeriodOut
    model_version: str
    n_open_deals: int
    expected: float = Field(description="Σ amount × p_win_in_period of the deals open at as_of")
    p10: float
    p50: float
    p90: float
    stage_weighted: float = Field(
        description="Σ amount × CRM stage probability, open deals closing in the period"
    )
    won_to_date: float
    n_won_to_date: int
    expected_new: float
    total: Range = Field(description="won + open + new")
    quota: float | None = None
    prob_attain_quota: float | None = None
    coverage_ratio: float | None = None
    open_pipeline_in_period: float
    remaining_quota: float | None = None
    new_business: NewBusinessOut
    categories: CategoriesOut
    group_by: str | None = None
    groups: list[GroupOut]
    deals: list[DealOut]
    flag_counts: dict[str, int]
    compare_to: str | None = None
    changes: list[ChangeOut] | None = None
    method: MethodOut
    notes: list[str]
