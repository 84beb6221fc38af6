"""``pipecast serve --prepare``: get a fresh clone ready to serve (demo data, first models).

Orchestration, so it belongs to the front door: it may call both training (to train the first
models) and the simulator, which the API itself never does. The CLI calls it before starting
the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from models.registry import champion_info, ensure_default_registry_dir
from pipecast.config import DEMO_SEED, Settings

log = logging.getLogger(__name__)

__all__ = ["BACKFILL_PREFIX", "DEMO_SEED", "Backfill", "backfill", "backfill_days", "prepare"]

#: request ids of the back-filled batches start with it: a second run skips the days it finds
BACKFILL_PREFIX = "backfill-"
#: the lead columns a BDR's list does not hold when it is scored (the outcome comes later)
_LEAD_OUTCOMES = ("is_sqo", "sqo_at", "meeting_at")

TrainFn = Callable[..., Any]


def prepare(
    settings: Settings,
    *,
    progress: Any = None,
    train: TrainFn | None = None,
    history: bool = True,
) -> None:
    """Generate the demo export if it is missing, train if no model has a champion, back-fill.

    Parameters
    ----------
    settings
        Where the data and the registry are.
    progress
        A rich progress display handed to the simulator and the training run.
    train
        The training entry point, ``train(settings, data_dir=, as_of=, progress=)``;
        default ``training.train.run_training``.
    history
        Back-fill the prediction store with the weekly predictions of the last quarters and
        the outcomes the export knows (:func:`backfill`), so that the calibration page has
        numbers from the first start.

    Notes
    -----
    The demo export is only generated when the data dir is the default one: a configured data
    dir that does not exist is the operator's mistake, not something to fill with fake deals.
    Training runs only when neither model has a champion, so that a model that failed its gates
    does not make every start retrain. When the simulator or the trainer is not available the
    server starts anyway, without models.
    """
    data_dir = Path(settings.data_dir)
    if settings.demo_data_is_default and not data_dir.exists():
        _generate_demo(data_dir, progress)
    if any(champion_info(settings, name) for name in (CLOSE_MODEL_NAME, SQO_MODEL_NAME)):
        log.info("a champion model is registered: no training needed")
    elif not data_dir.exists():
        log.warning(
            "no champion model and no data in %s to train one: serving without models", data_dir
        )
        return
    else:
        if train is None:
            try:
                # imported late: a tree without training still serves (without models)
                from training.train import run_training
            except ImportError as exc:
                log.warning("training is not available (%s): serving without models", exc)
                return
            train = run_training
        ensure_default_registry_dir(settings)
        log.info("no champion model registered: training on %s", data_dir)
        train(settings, data_dir=data_dir, as_of=None, progress=progress)
    if history and data_dir.exists():
        try:
            backfill(settings, progress=progress)
        except Exception as exc:  # noqa: BLE001 — the history is a convenience: serve anyway
            log.warning(
                "the history was not back-filled (%s: %s); the server starts without it",
                type(exc).__name__,
                exc,
            )


@dataclass
class Backfill:
    """What :func:`backfill` stored: the days, and the rows per kind (days already there skipped)."""

    days: list[pd.Timestamp] = field(default_factory=list)
    skipped: int = 0
    deal_scores: int = 0
    lead_scores: int = 0
    forecasts: int = 0
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)


def backfill_days(
    exported_at: pd.Timestamp, fiscal_year_start_month: int, quarters: int
) -> list[pd.Timestamp]:
    """The weekly days to back-fill: every 7th day before the export date, back to the start of
    the fiscal quarter ``quarters`` quarters before the export date's, oldest first.

    The export date itself is not among them: it is the day the server scores live.
    """
    from features.periods import quarter_start

    end = pd.Timestamp(exported_at).normalize()
    start = quarter_start(end, fiscal_year_start_month)
    for _ in range(quarters):
        start = quarter_start(start - pd.Timedelta(days=1), fiscal_year_start_month)
    days = []
    day = end - pd.Timedelta(days=7)
    while day >= start:
        days.append(day)
        day -= pd.Timedelta(days=7)
    return days[::-1]


def backfill(settings: Settings, *, quarters: int = 2, progress: Any = None) -> Backfill:
    """Fill the prediction store with the predictions a team would have made each week.

    For every day of :func:`backfill_days`, the export is cut as it stood at the end of that
    day (``features.training_table.as_known_at``: later deals, stage changes, activities and
    outcomes are not seen) and scored with the champions in service: the deals open then (for
    the fiscal quarter of that day), the leads created in the 7 days up to it (as a BDR's list,
    without its outcome columns), and the forecast of the quarter. Each is stored as a request
    would be, with that day as its as-of. Then the outcomes known at the export date are synced
    (``outcomes sync``), so that the calibration page and the forecast-vs-actual table show
    numbers from the first start.

    Idempotent: every stored batch carries the request id ``backfill-<kind>-<day>``, and a day
    and kind already in the store is skipped. The champions are today's: a deal scored in a week
    the model was trained on is scored in-sample, so the page flatters the model for those weeks
    (``pipecast backtest`` retrains at every date for an honest comparison).
    """
    from features.errors import InputError
    from features.io import read_export
    from features.training_table import as_known_at
    from serving.champions import ChampionHolder
    from serving.errors import Unavailable
    from serving.service import rank_leads, score_export_pipeline, sync_outcomes
    from serving.store import Store

    done = Backfill()
    try:
        export = read_export(settings.data_dir)
    except InputError as exc:
        log.warning(
            "the export in %s cannot be read (%s): no history back-filled", settings.data_dir, exc
        )
        return done
    if export.opportunities is None and export.leads is None:
        return done
    champions = ChampionHolder(settings).load_at_start()
    close = champions.models.get("close_probability")
    sqo = champions.models.get("sqo_likelihood")
    store = Store(settings.database_url, create_parent=settings.database_url_is_default)
    try:
        try:
            store.ensure_schema(migrate=True)
        except Unavailable as exc:
            log.warning("%s: no history back-filled", exc)
            return done
        try:
            days = backfill_days(
                export.exported_at, export.config.fiscal_year_start_month, quarters
            )
        except InputError:  # an export without dates has no weeks to go back through
            days = []
        done.days = days
        stored = store.request_ids(BACKFILL_PREFIX)
        forecast = _forecaster() if close is not None else None
        task = None
        if progress is not None and days:
            task = progress.add_task("back-filling weekly predictions", total=len(days))
        for day in days:
            label = day.date().isoformat()
            wanted = {
                "deals": close is not None and export.opportunities is not None,
                "forecast": forecast is not None and export.opportunities is not None,
                "leads": sqo is not None and export.leads is not None,
            }
            todo = {
                k for k, v in wanted.items() if v and f"{BACKFILL_PREFIX}{k}-{label}" not in stored
            }
            if not todo:
                done.skipped += 1
            else:
                known = as_known_at(export, day)
                if "deals" in todo and close is not None:
                    scored = score_export_pipeline(
                        settings,
                        close,
                        store,
                        known,
                        as_of=day,
                        request_id=f"{BACKFILL_PREFIX}deals-{label}",
                    )
                    done.deal_scores += int(scored["n_deals"])
                if "leads" in todo and sqo is not None and known.leads is not None:
                    leads = known.leads
                    created = leads["created_at"]
                    week = ((created > day - pd.Timedelta(days=7)) & (created <= day)).to_numpy(
                        dtype=bool, na_value=False
                    )
                    if week.any():
                        posted = (
                            leads.loc[week]
                            .drop(columns=[c for c in _LEAD_OUTCOMES if c in leads.columns])
                            .reset_index(drop=True)
                        )
                        table, _, _ = rank_leads(
                            settings,
                            sqo,
                            store,
                            posted,
                            as_of=label,
                            history=known,
                            request_id=f"{BACKFILL_PREFIX}leads-{label}",
                        )
                        done.lead_scores += len(table)
                if "forecast" in todo and forecast is not None and close is not None:
                    forecast(store, close, known, day, f"{BACKFILL_PREFIX}forecast-{label}")
                    done.forecasts += 1
            if task is not None:
                progress.advance(task)
        done.outcomes = sync_outcomes(settings, store, export)
    finally:
        store.dispose()
    log.info(
        "back-filled %d weeks (%d already stored): %d deal scores, %d lead scores, %d forecasts",
        len(done.days),
        done.skipped,
        done.deal_scores,
        done.lead_scores,
        done.forecasts,
    )
    return done


def _forecaster() -> Callable[..., None] | None:
    """Forecast a quarter and store it, when this tree has the forecast (else ``None``)."""
    try:
        from serving.forecasting import forecast_export
        from serving.reports.pages import store_forecast
    except ImportError as exc:
        log.info("no forecasts back-filled (%s)", exc)
        return None

    def run(store: Any, champion: Any, export: Any, day: pd.Timestamp, request_id: str) -> None:
        from features.periods import fiscal_quarter

        period = fiscal_quarter(day, export.config.fiscal_year_start_month)
        result = forecast_export(
            export,
            champion.model,
            model_version=champion.version,
            period=period.label,
            as_of=day.date().isoformat(),
        )
        store_forecast(store, result.response, model_name=champion.name, request_id=request_id)

    return run


def _generate_demo(data_dir: Path, progress: Any) -> None:
    try:
        from features.synthetic import simulate, write_simulation
    except ImportError as exc:
        log.warning("cannot generate the demo export (%s)", exc)
        return
    log.info("generating the demo CRM export in %s (seed %d)", data_dir, DEMO_SEED)
    write_simulation(simulate(seed=DEMO_SEED, progress=progress), data_dir)
