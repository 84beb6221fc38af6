"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.errors import InputError
from serving.lead_list import ListRules, Tiering


class Health(BaseModel):
    """The service is up."""

    status: Literal["ok"] = "ok"


class ModelInfo(BaseModel):
    """One registered model: its champion version and what it was trained on, or that none is."""

    model: str = Field(description="close_probability or sqo_likelihood")
    name: str = Field(description="registered model name in MLflow")
    status: str = Field(description="'champion', or 'no model trained yet'")
    version: str | None = None
    in_service: str | None = Field(
        default=None,
        description="the version this server scores with (differs from version until "
        "POST /models/reload after a new champion is promoted)",
    )
    alias: str | None = None
    run_id: str | None = None
    metrics: dict[str, float] = Field(
        default_factory=dict, description="the training run's metrics"
    )
    trained_at: str | None = None
    data_start: str | None = Field(default=None, description="first day of the training data")
    data_end: str | None = Field(default=None, description="last day of the training data (as-of)")
    data_fingerprint: str | None = None
    registered_at: str | None = None
    split: str | None = Field(
        default=None,
        description=(
            "how the test slice was drawn: 'time' (later months than trained on), or 'random' "
            "for an export without dates"
        ),
    )
    split_note: str | None = Field(
        default=None,
        description="for a random split: 'no dates: a random split; these figures cannot show drift'",
    )
    kind: str | None = Field(
        default=None,
        description=(
            "'lightgbm' (engineered features), 'plain' (LightGBM on the raw columns, which "
            "beat it) or 'baseline' (a historical rate, flagged: no learned model passed)"
        ),
    )


class ModelsResponse(BaseModel):
    """The models the API scores with."""

    models: list[ModelInfo]


class ErrorResponse(BaseModel):
    """A refused request: what to fix, and for a broken export each problem found."""

    detail: str
    problems: list[dict[str, Any]] | None = None


class HealthDetail(BaseModel):
    """The service is up; whether what it depends on answers (cheap checks, no model loads)."""

    status: Literal["ok", "degraded"] = "ok"
    store: str = Field(description="'ok', or why the prediction store cannot be used")
    registry: str = Field(description="'ok', or why the model registry cannot be read")
    models: dict[str, str | None] = Field(
        default_factory=dict, description="the version of each model in service (null: none)"
    )


# --- outcomes ------------------------------------------------------------------------------


class DealOutcomeIn(BaseModel):
    """How a deal ended."""

    model_config = ConfigDict(extra="forbid")

    opportunity_id: str = Field(min_length=1, max_length=200)
    status: Literal["won", "lost"] = Field(description="won or lost (an open deal has no outcome)")
    closed_at: datetime | date = Field(description="the day it was won or lost")
    amount: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class LeadOutcomeIn(BaseModel):
    """Whether a lead became an SQO: ``sqo_at`` (it did, that day) and/or ``is_sqo``."""

    model_config = ConfigDict(extra="forbid")

    lead_id: str = Field(min_length=1, max_length=200)
    is_sqo: bool | None = None
    sqo_at: datetime | date | None = None

    @model_validator(mode="after")
    def _one_of(self) -> LeadOutcomeIn:
        if self.is_sqo is None and self.sqo_at is None:
            raise ValueError("give sqo_at (the day it became an SQO) or is_sqo (true/false)")
        if self.is_sqo is False and self.sqo_at is not None:
            raise ValueError("is_sqo is false but sqo_at is given: a lead with sqo_at is an SQO")
        return self


class OutcomesIn(BaseModel):
    """Actual results, as they become known; posting the same outcome again changes nothing."""

    model_config = ConfigDict(extra="forbid")

    opportunities: list[DealOutcomeIn] = Field(default_factory=list)
    leads: list[LeadOutcomeIn] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> OutcomesIn:
        if not self.opportunities and not self.leads:
            raise ValueError("give opportunities and/or leads outcomes")
        return self


class UpsertResult(BaseModel):
    """What a post did to the stored outcomes."""

    inserted: int
    updated: int
    unchanged: int


class OutcomesResult(BaseModel):
    """Outcomes stored: new, changed (history kept), and already known."""

    opportunities: UpsertResult
    leads: UpsertResult


# --- scoring -------------------------------------------------------------------------------


class ScoreOpportunitiesIn(BaseModel):
    """Which pipeline to score: the deals open at ``as_of``, inline or the server's CRM export."""

    model_config = ConfigDict(extra="forbid")

    as_of: date | None = Field(default=None, description="end of this day; default: export date")
    period: str | None = Field(
        default=None, description="2026-Q3, 2026-07 or 2026-07-01:2026-09-30; default: quarter"
    )
    opportunities: list[dict[str, Any]] | None = Field(
        default=None, description="the pipeline inline (contract columns); default: the export"
    )
    stage_history: list[dict[str, Any]] | None = None
    activities: list[dict[str, Any]] | None = None

    def tables(self) -> dict[str, list[dict[str, Any]]] | None:
        """The inline tables given, or None to score the server's export."""
        given = {
            name: rows
            for name, rows in (
                ("opportunities", self.opportunities),
                ("stage_history", self.stage_history),
                ("activities", self.activities),
            )
            if rows is not None
        }
        if given and "opportunities" not in given:
            raise InputError(
                "stage_history / activities were posted without opportunities: post the "
                "pipeline's opportunities too, or none of the tables to use the server's export."
            )
        return given or None


class PeriodOut(BaseModel):
    label: str
    start: date
    end: date


class DealScore(BaseModel):
    opportunity_id: str
    p_win: float
    p_win_in_period: float
    expected_value: float
    flags: str | None = None
    top_factors: str | None = None
    model_version: str


class ScoreOpportunitiesOut(BaseModel):
    """Every deal open at ``as_of``, largest expected value first (stored for calibration)."""

    as_of: date
    period: PeriodOut
    model_version: str
    n_deals: int
    deals: list[DealScore]


class ListRulesQuery(BaseModel):
    """The list rules a lead list is cut by (all optional; do-not-contact leads are excluded)."""

    model_config = ConfigDict(extra="forbid")

    include_do_not_contact: bool = Field(default=False, description="keep do-not-contact leads")
    recontact_days: int | None = Field(
        default=None, ge=1, description="skip leads contacted fewer than this many days before"
    )
    skip_open_accounts: bool = Field(default=False, description="skip accounts with an open deal")
    skip_customers: bool = Field(default=False, description="skip accounts with a won deal")
    max_per_account: int | None = Field(default=None, ge=1, description="most leads per account")
    top: int | None = Field(default=None, ge=1, description="keep the best N leads")
    capacity_each: int | None = Field(
        default=None, ge=1, description="allocate the kept leads to their BDRs, this many each"
    )
    tiers_by: Literal["percentile", "probability"] = Field(
        default="percentile", description="tier cut-offs as list shares or as probabilities"
    )
    tier_cuts: list[float] | None = Field(
        default=None, description="three cut-offs for tiers A, B, C (default 0.10, 0.30, 0.60)"
    )

    def to_rules(self, bdr_capacity: dict[str, int] | None = None) -> ListRules:
        """The rules as the list code takes them (checked there: ``InputError`` → 422)."""
        if self.tier_cuts is not None:
            tiers = Tiering(by=self.tiers_by, cuts=tuple(self.tier_cuts))  # type: ignore[arg-type]
        elif self.tiers_by == "probability":
            raise InputError(
                "tiers_by=probability needs tier_cuts: the lowest SQO probability of tiers A, B "
                "and C (e.g. 0.15, 0.08, 0.04)."
            )
        else:
            tiers = Tiering()
        return ListRules(
            include_do_not_contact=self.include_do_not_contact,
            recontact_days=self.recontact_days,
            skip_open_accounts=self.skip_open_accounts,
            skip_customers=self.skip_customers,
            max_per_account=self.max_per_account,
            top=self.top,
            bdr_capacity=bdr_capacity,
            capacity_each=self.capacity_each,
            tiers=tiers,
        )


class LeadsCsvQuery(ListRulesQuery):
    """The query of ``POST /score/leads.csv``: the scoring day and the list rules."""

    as_of: date | None = Field(
        default=None, description="scoring day; default: export date or newest created_at"
    )


class ListRulesIn(ListRulesQuery):
    """List rules in a JSON body: BDR capacities may be given one by one."""

    bdr_capacity: dict[str, int] | None = Field(
        default=None, description="leads each BDR can take, by sdr_id"
    )

    def to_rules(self, bdr_capacity: dict[str, int] | None = None) -> ListRules:
        return super().to_rules(bdr_capacity if bdr_capacity is not None else self.bdr_capacity)


class ScoreLeadsIn(BaseModel):
    """A lead list (contract ``leads`` columns, ``lead_id`` required) to rank."""

    model_config = ConfigDict(extra="forbid")

    leads: list[dict[str, Any]] = Field(min_length=1)
    as_of: date | None = Field(
        default=None, description="scoring day; default: export date or newest created_at"
    )
    rules: ListRulesIn = Field(default_factory=ListRulesIn)


class LeadScore(BaseModel):
    model_config = ConfigDict(extra="allow")

    lead_id: str
    sqo_probability: float
    rank: int | None = None
    tier: str | None = None
    reasons: str | None = None
    model_version: str
    excluded_reason: str | None = None


class ScoreLeadsOut(BaseModel):
    """The list ranked best first; excluded leads last with ``excluded_reason``."""

    as_of: date
    model_version: str
    n_leads: int
    summary: dict[str, Any] = Field(
        description="leads kept and excluded by reason, rules applied, expected SQOs by tier"
    )
    leads: list[LeadScore]


class ReloadOut(BaseModel):
    """The models in service after a successful reload."""

    models: dict[str, str | None]
    loaded_at: datetime


# --- calibration ---------------------------------------------------------------------------


class CalibrationOut(BaseModel):
    """Stored predictions against the outcomes known so far."""

    model: str
    since: date | None = None
    segment: str | None = None
    n_predictions: int
    n_with_outcome: int
    pending: int = Field(description="predictions whose outcome is not known yet")
    overall: dict[str, float | None]
    reliability: list[dict[str, Any]]
    by_model_version: list[dict[str, Any]]
    by_segment: list[dict[str, Any]]
    by_week_of_quarter: list[dict[str, Any]]
    forecasts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="forecasts of periods that have ended: expected, p10–p90 and actual won",
    )
