"""The prediction store: scoring requests, deal and lead scores, forecasts, outcomes, history.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_batches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(50), nullable=False),
        sa.Column("requested_at", sa.DateTime, nullable=False),
        sa.Column("request_id", sa.String(64)),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("period_label", sa.String(40)),
        sa.Column("period_start", sa.Date),
        sa.Column("period_end", sa.Date),
        sa.Column("n_rows", sa.Integer, nullable=False),
    )
    op.create_index("ix_prediction_batches_model", "prediction_batches", ["model", "model_version"])
    op.create_index("ix_prediction_batches_as_of", "prediction_batches", ["as_of"])
    op.create_table(
        "deal_scores",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "batch_id",
            sa.Integer,
            sa.ForeignKey("prediction_batches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("opportunity_id", sa.String(200), nullable=False),
        sa.Column("p_win", sa.Float, nullable=False),
        sa.Column("p_win_in_period", sa.Float),
        sa.Column("expected_value", sa.Float),
        sa.Column("amount", sa.Float),
        sa.Column("segment", sa.String(200)),
        sa.Column("week_of_quarter", sa.Integer),
    )
    op.create_index("ix_deal_scores_batch", "deal_scores", ["batch_id"])
    op.create_index("ix_deal_scores_opportunity", "deal_scores", ["opportunity_id"])
    op.create_table(
        "lead_scores",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "batch_id",
            sa.Integer,
            sa.ForeignKey("prediction_batches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("lead_id", sa.String(200), nullable=False),
        sa.Column("sqo_probability", sa.Float, nullable=False),
        sa.Column("rank", sa.Integer),
        sa.Column("tier", sa.String(40)),
        sa.Column("excluded_reason", sa.String(400)),
        sa.Column("segment", sa.String(200)),
        sa.Column("week_of_quarter", sa.Integer),
    )
    op.create_index("ix_lead_scores_batch", "lead_scores", ["batch_id"])
    op.create_index("ix_lead_scores_lead", "lead_scores", ["lead_id"])
    op.create_table(
        "forecasts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "batch_id",
            sa.Integer,
            sa.ForeignKey("prediction_batches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("expected", sa.Float),
        sa.Column("p10", sa.Float),
        sa.Column("p50", sa.Float),
        sa.Column("p90", sa.Float),
        sa.Column("stage_weighted", sa.Float),
        sa.Column("quota", sa.Float),
        sa.Column("prob_attain_quota", sa.Float),
        sa.Column("body", sa.JSON),
    )
    op.create_index("ix_forecasts_batch", "forecasts", ["batch_id"])
    op.create_table(
        "deal_outcomes",
        sa.Column("opportunity_id", sa.String(200), primary_key=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("closed_at", sa.Date, nullable=False),
        sa.Column("amount", sa.Float),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("first_recorded_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "lead_outcomes",
        sa.Column("lead_id", sa.String(200), primary_key=True),
        sa.Column("is_sqo", sa.Boolean, nullable=False),
        sa.Column("sqo_at", sa.Date),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("first_recorded_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "outcome_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(8), nullable=False),
        sa.Column("entity_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(8)),
        sa.Column("closed_at", sa.Date),
        sa.Column("amount", sa.Float),
        sa.Column("is_sqo", sa.Boolean),
        sa.Column("sqo_at", sa.Date),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_outcome_history_entity", "outcome_history", ["entity", "entity_id"])


def downgrade() -> None:
    op.drop_table("outcome_history")
    op.drop_table("lead_outcomes")
    op.drop_table("deal_outcomes")
    op.drop_table("forecasts")
    op.drop_table("lead_scores")
    op.drop_table("deal_scores")
    op.drop_table("prediction_batches")
