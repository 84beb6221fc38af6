"""The ``pipecast`` command line (interface.md). Exit 0 ok, 1 run-time failure, 2 bad input."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from features.errors import InputError
from pipecast.config import Settings

app = typer.Typer(
    name="pipecast",
    help="Calibrated B2B sales forecasts and SQO-likelihood lead scoring from your CRM history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
import_app = typer.Typer(
    help="Turn another CRM export into the pipecast contract.", no_args_is_help=True
)
score_app = typer.Typer(
    help="Score open opportunities or a lead list with the champion models.", no_args_is_help=True
)
db_app = typer.Typer(help="The prediction / outcome store.", no_args_is_help=True)
outcomes_app = typer.Typer(
    help="Actual results (won/lost deals, SQOs) in the prediction store.", no_args_is_help=True
)
app.add_typer(import_app, name="import")
app.add_typer(score_app, name="score")
app.add_typer(db_app, name="db")
app.add_typer(outcomes_app, name="outcomes")
report_app = typer.Typer(
    help="Reports: the SQO funnel (and calibration) as tables, JSON and charts.",
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")

#: human output (tables, progress) goes to stderr so that stdout can carry files or JSON
err = Console(stderr=True, soft_wrap=True)
out = Console()
log = logging.getLogger("pipecast")

F = TypeVar("F", bound=Callable[..., Any])
_state: dict[str, bool] = {"debug": False}


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "matplotlib", "git"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.ERROR)


def handle_errors(func: F) -> F:
    """User mistakes → one clear paragraph and exit 2; other failures → exit 1 (traceback with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 — the last line of defence of a CLI
            if _state["debug"]:
                raise
            err.print(
                f"[bold red]pipecast failed:[/] {type(exc).__name__}: {exc}\n"
                "Run again with --debug for the traceback.",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    """pipecast: forecasts and lead scores learned from your own CRM history."""
    _state["debug"] = debug
    _configure_logging(debug)


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        # a bad value in the environment is the user's to fix: exit 2 naming the variable
        wrong = "; ".join(
            f"PIPECAST_{'_'.join(str(p) for p in e['loc']).upper()}={e.get('input')!r}: {e['msg']}"
            for e in exc.errors()
        )
        raise InputError(
            f"A setting is not valid ({wrong}). Fix it in the environment or .env."
        ) from None


def _data_dir(data: Path | None) -> Path:
    return data if data is not None else _settings().data_dir


DataOpt = Annotated[
    Path | None, typer.Option("--data", help="CRM export folder (default: PIPECAST_DATA_DIR).")
]
AsOfOpt = Annotated[
    str | None,
    typer.Option("--as-of", help="Point in time, YYYY-MM-DD (default: the export date)."),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Refuse the export (exit 2) when any row contradicts itself, instead of leaving "
        "those rows out (quarantine).",
    ),
]


@contextlib.contextmanager
def _reading_exports(strict: bool, *, listed_here: bool = False) -> Iterator[None]:
    """Read exports with --strict and the quarantine threshold; then say what was left out."""
    from features.checks import summary_line
    from features.io import read_policy

    threshold = _settings().quarantine_threshold
    with read_policy(strict=strict, quarantine_threshold=threshold) as policy:
        yield
    line = summary_line(policy.counts())
    if line is not None:
        where = "listed below" if listed_here else "`pipecast validate` lists them"
        err.print(f"[yellow]{line}[/]; {where}", highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------


@app.command()
@handle_errors
def simulate(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write the synthetic export to.")
    ],
    seed: Annotated[
        int, typer.Option(min=0, help="Random seed (≥ 0): the same seed gives the same export.")
    ] = 7,
    opportunities: Annotated[
        int, typer.Option("--opportunities", min=50, help="About how many opportunities.")
    ] = 16000,
    leads: Annotated[int, typer.Option("--leads", min=100, help="How many list leads.")] = 60000,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    stale_share: Annotated[
        float,
        typer.Option(
            "--stale-share",
            min=0.0,
            max=0.5,
            help="Share of deals never closed (left open when they quietly died); "
            "0 for a CRM where every deal gets closed.",
        ),
    ] = 0.15,
) -> None:
    """Write a synthetic B2B CRM export (plus truth/ with the generator's true probabilities)."""
    from features import synthetic
    from features.io import check_output_folder

    if fmt not in ("csv", "parquet"):
        raise InputError(f"--format {fmt!r}: choose csv or parquet.")
    check_output_folder(out_dir)
    with _progress() as progress:
        result = synthetic.simulate(
            seed=seed,
            n_opportunities=opportunities,
            n_leads=leads,
            stale_share=stale_share,
            progress=progress,
        )
        synthetic.write_simulation(result, out_dir, fmt=fmt)
    err.print(f"[green]wrote[/] {out_dir} ({synthetic.describe(result)})", highlight=False)


@app.command()
@handle_errors
def validate(
    data: DataOpt = None,
    strict: StrictOpt = False,
    quarantine: Annotated[
        Path | None,
        typer.Option(
            "--quarantine",
            help="Write the quarantined rows (file, line, id, column, value, reason) to this CSV.",
        ),
    ] = None,
) -> None:
    """Check an export against the contract; print counts, rates, warnings and quarantined rows."""
    from features.io import check_output_file, export_files, read_export, write_table
    from features.report import render_validation, summarize

    folder = _data_dir(data)
    if quarantine is not None:
        check_output_file(quarantine, option="--quarantine", inputs=export_files(folder))
    with _reading_exports(strict, listed_here=True):
        export = read_export(folder)
        render_validation(summarize(export), out)
    if quarantine is not None:
        write_table(export.quarantine, quarantine)
        err.print(
            f"[green]wrote[/] {quarantine}: {len(export.quarantine)} quarantined row(s)",
            highlight=False,
        )


@import_app.command("maven-crm")
@handle_errors
def import_maven_crm(
    src: Annotated[Path, typer.Argument(help="Folder with the Maven CRM CSV files.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the contract export to.")],
) -> None:
    """Import the Maven Analytics CRM + Sales + Opportunities dataset."""
    from features.adapters import maven_crm
    from features.io import check_output_folder, write_export

    check_output_folder(out_dir)
    export = maven_crm.convert(src)
    write_export(export, out_dir)
    err.print(
        f"[green]wrote[/] {out_dir}: {0 if export.opportunities is None else len(export.opportunities)} opportunities",
        highlight=False,
    )


@import_app.command("bank-marketing")
@handle_errors
def import_bank_marketing(
    src: Annotated[
        Path, typer.Argument(help="bank-additional-full.csv, bank-full.csv or their folder.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the contract export to.")],
) -> None:
    """Import the UCI bank-marketing campaigns as leads (``duration`` dropped: it leaks)."""
    from features.adapters import bank_marketing
    from features.io import check_output_folder, write_export

    check_output_folder(out_dir, inputs=[src])
    export = bank_marketing.convert(src)
    write_export(export, out_dir)
    err.print(
        f"[green]wrote[/] {out_dir}: {0 if export.leads is None else len(export.leads)} leads",
        highlight=False,
    )


@import_app.command("csv")
@handle_errors
def import_csv(
    src: Annotated[
        Path, typer.Argument(help="A report export file or folder (Salesforce, HubSpot, …).")
    ],
    mapping: Annotated[
        Path, typer.Option("--mapping", help="Mapping YAML (see features/adapters/mappings/).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the contract export to.")],
) -> None:
    """Rename and convert the columns of a CRM report export with a mapping file."""
    from features.adapters import generic_csv
    from features.io import check_output_folder, write_export

    check_output_folder(out_dir, inputs=generic_csv.source_files(src, mapping))
    export = generic_csv.convert(src, mapping)
    write_export(export, out_dir)
    counts = ", ".join(f"{len(df)} {name}" for name, df in export.tables().items())
    err.print(f"[green]wrote[/] {out_dir}: {counts}", highlight=False)


# ----------------------------------------------------------------------------------------
# features, training, scoring
# ----------------------------------------------------------------------------------------


@app.command()
@handle_errors
def features(
    out_file: Annotated[Path, typer.Option("--out", help="CSV or .parquet file to write.")],
    as_of: Annotated[
        str, typer.Option("--as-of", help="Point in time, YYYY-MM-DD (end of that day).")
    ],
    data: DataOpt = None,
    leads: Annotated[
        bool, typer.Option("--leads", help="Lead features instead of opportunity features.")
    ] = False,
    snapshots: Annotated[
        bool,
        typer.Option(
            "--snapshots",
            help="The labelled training table instead: every deal at each snapshot day up to "
            "--as-of (every lead as of its creation, with --leads), features beside label_ "
            "columns read as of --as-of.",
        ),
    ] = False,
    every: Annotated[
        str,
        typer.Option(
            "--every",
            help="Snapshot frequency with --snapshots: W-SUN (every Sunday), 2W-SUN, 14D, MS…",
        ),
    ] = "W-SUN",
    strict: StrictOpt = False,
) -> None:
    """Point-in-time feature table of the opportunities open (or leads listed) at --as-of."""
    from features.io import check_output_file, export_files, read_export, write_table
    from features.lead import build as build_leads
    from features.opportunity import build as build_opps
    from features.periods import parse_date
    from features.training_table import (
        as_known_at,
        lead_training_table,
        opportunity_training_table,
        parse_frequency,
    )

    when = parse_date(as_of)
    if snapshots:
        parse_frequency(every)  # a bad --every is refused before the export is read
    folder = _data_dir(data)
    check_output_file(out_file, inputs=export_files(folder))
    with _reading_exports(strict):
        export = read_export(folder, require=("leads",) if leads else ("opportunities",))
    export.check_as_of(when)
    if snapshots:
        known = as_known_at(export, when)
        table = (
            lead_training_table(known) if leads else opportunity_training_table(known, freq=every)
        )
    else:
        table = build_leads(export, as_of=when) if leads else build_opps(export, as_of=when)
    # the opportunity snapshot table carries opportunity_id as a column, the others as index
    write_table(table.reset_index(drop=snapshots and not leads), out_file)
    err.print(
        f"[green]wrote[/] {out_file}: {len(table)} rows × {table.shape[1]} columns",
        highlight=False,
    )


@app.command()
@handle_errors
def train(data: DataOpt = None, as_of: AsOfOpt = None, strict: StrictOpt = False) -> None:
    """Train both models on data known at --as-of, evaluate on a later slice, log to MLflow, gate."""
    from training.train import render_summary, run_training

    settings = _settings()
    with _reading_exports(strict):
        with _progress() as progress:
            summary = run_training(
                settings, data_dir=_data_dir(data), as_of=as_of, progress=progress
            )
        render_summary(summary, err)


@score_app.command("opportunities")
@handle_errors
def score_opportunities(
    out_file: Annotated[Path, typer.Option("--out", help="CSV or .parquet file to write.")],
    data: DataOpt = None,
    as_of: AsOfOpt = None,
    period: Annotated[
        str | None,
        typer.Option(
            "--period",
            help="2026-Q3, 2026-07 or 2026-07-01:2026-09-30 (default: the quarter of --as-of).",
        ),
    ] = None,
    strict: StrictOpt = False,
) -> None:
    """Score every opportunity open at --as-of with the champion close-probability model."""
    from features.io import check_output_file, export_files, write_table
    from serving.scoring import score_opportunities_cli

    folder = _data_dir(data)
    check_output_file(out_file, inputs=export_files(folder))
    with _reading_exports(strict):
        table = score_opportunities_cli(_settings(), data_dir=folder, as_of=as_of, period=period)
    write_table(table, out_file)
    err.print(f"[green]wrote[/] {out_file}: {len(table)} open opportunities", highlight=False)


@score_app.command("leads")
@handle_errors
def score_leads(
    file: Annotated[
        Path, typer.Argument(help="Lead list (CSV or Parquet) with contract lead columns.")
    ],
    out_file: Annotated[Path, typer.Option("--out", help="CSV or .parquet file to write.")],
    data: DataOpt = None,
    as_of: AsOfOpt = None,
    strict: StrictOpt = False,
    include_do_not_contact: Annotated[
        bool,
        typer.Option(
            "--include-do-not-contact",
            help="Keep do-not-contact leads in the ranking (for analysis only: never sequence them).",
        ),
    ] = False,
    recontact_days: Annotated[
        int | None,
        typer.Option(
            "--recontact-days",
            min=1,
            help="Skip leads contacted in the last N days (last_contacted_at, and with --data "
            "the export's lead activities up to the scoring day).",
        ),
    ] = None,
    skip_open_accounts: Annotated[
        bool,
        typer.Option("--skip-open-accounts", help="Skip leads of accounts with an open deal."),
    ] = False,
    skip_customers: Annotated[
        bool, typer.Option("--skip-customers", help="Skip leads of accounts with a won deal.")
    ] = False,
    max_per_account: Annotated[
        int | None,
        typer.Option(
            "--max-per-account", min=1, help="Keep at most N leads per account (the best)."
        ),
    ] = None,
    top: Annotated[int | None, typer.Option("--top", min=1, help="Keep the best N leads.")] = None,
    bdrs: Annotated[
        Path | None,
        typer.Option("--bdrs", help="CSV of BDRs (sdr_id,capacity) to allocate the list to."),
    ] = None,
    bdr_capacity: Annotated[
        int | None,
        typer.Option(
            "--bdr-capacity", min=1, help="Allocate to the BDRs in the list, N leads each."
        ),
    ] = None,
    tiers_by: Annotated[
        str,
        typer.Option(
            "--tiers-by", help="Tier cut-offs as list shares (percentile) or probability."
        ),
    ] = "percentile",
    tier_cuts: Annotated[
        str | None,
        typer.Option(
            "--tier-cuts",
            help="Cut-offs of tiers A,B,C: shares of the list (default 0.1,0.3,0.6) or, with "
            "--tiers-by probability, lowest SQO probabilities (e.g. 0.15,0.08,0.04).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the list summary as JSON on stdout.")
    ] = False,
) -> None:
    """Rank a lead list by the champion SQO-likelihood model, tier it and apply the list rules."""
    import json

    from features.io import check_output_file, export_files
    from serving.lead_list import ListRules, Tiering, read_bdr_capacities
    from serving.reports.lead_list import render_list_summary
    from serving.scoring import score_lead_file_cli

    check_output_file(out_file, inputs=[file, *export_files(_data_dir(data))])
    if tiers_by not in ("percentile", "probability"):
        raise InputError(f"--tiers-by {tiers_by!r}: choose percentile or probability.")
    cuts: tuple[float, ...] = (0.10, 0.30, 0.60)
    if tier_cuts is not None:
        try:
            cuts = tuple(float(x) for x in tier_cuts.split(","))
        except ValueError:
            raise InputError(
                f"--tier-cuts {tier_cuts!r}: give three numbers separated by commas, e.g. 0.1,0.3,0.6."
            ) from None
    elif tiers_by == "probability":
        raise InputError("--tiers-by probability needs --tier-cuts, e.g. 0.15,0.08,0.04.")
    rules = ListRules(
        include_do_not_contact=include_do_not_contact,
        recontact_days=recontact_days,
        skip_open_accounts=skip_open_accounts,
        skip_customers=skip_customers,
        max_per_account=max_per_account,
        top=top,
        bdr_capacity=read_bdr_capacities(bdrs) if bdrs is not None else None,
        capacity_each=bdr_capacity,
        tiers=Tiering(by=tiers_by, cuts=cuts),  # type: ignore[arg-type]
    )
    # the list is read, scored and written in chunks: memory stays flat in its length
    with _reading_exports(strict), _progress() as progress:
        tasks: dict[str, Any] = {}

        def advance(step: str, done: int, total: int | None) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(f"{step} leads", total=total)
            progress.update(tasks[step], completed=done, total=total)

        summary = score_lead_file_cli(
            _settings(),
            leads_file=file,
            out_file=out_file,
            data_dir=data,
            as_of=as_of,
            rules=rules,
            progress=advance,
        )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))  # plain: stdout holds only the JSON document
    else:
        render_list_summary(summary, err)
    err.print(
        f"[green]wrote[/] {out_file}: {summary['kept']} leads ranked, "
        f"{summary['excluded']} excluded",
        highlight=False,
    )


@app.command()
@handle_errors
def forecast(
    period: Annotated[
        str | None,
        typer.Option("--period", help="The period: 2026-Q3, 2026-07 or 2026-07-01:2026-09-30."),
    ] = None,
    data: DataOpt = None,
    as_of: AsOfOpt = None,
    quota: Annotated[
        float | None,
        typer.Option(
            "--quota", help="The period's quota (≥ 0): adds the odds of making it and coverage."
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="Roll up by a column: owner_id, segment, source, region, stage, product, "
            "forecast_category or category (the model's commit / best case / pipeline).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the forecast as JSON (only JSON on stdout).")
    ] = False,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Write the per-deal lines to this CSV or .parquet file."),
    ] = None,
    compare_to: Annotated[
        str | None,
        typer.Option(
            "--compare-to",
            help="An earlier day (YYYY-MM-DD, e.g. last week's call): list what changed since.",
        ),
    ] = None,
    commit: Annotated[
        float, typer.Option("--commit", help="p in period from which a deal is 'commit'.")
    ] = 0.7,
    best_case: Annotated[
        float, typer.Option("--best-case", help="p in period from which a deal is 'best case'.")
    ] = 0.4,
    neglect_days: Annotated[
        int, typer.Option("--neglect-days", help="Flag deals with no activity in this many days.")
    ] = 30,
    change_points: Annotated[
        float,
        typer.Option(
            "--change-points",
            help="With --compare-to: list deals whose p in period moved this many points.",
        ),
    ] = 10.0,
    strict: StrictOpt = False,
) -> None:
    """The period's forecast: expected, range, quota odds, roll-up, deals, red flags, changes."""
    import json

    from features.io import check_output_file, export_files, write_table
    from serving.forecasting import forecast_cli, jsonable, render_forecast

    folder = _data_dir(data)
    if out_file is not None:
        check_output_file(out_file, inputs=export_files(folder))
    with _reading_exports(strict):
        result = forecast_cli(
            _settings(),
            data_dir=folder,
            period=period,
            as_of=as_of,
            quota=quota,
            group_by=by,
            compare_to=compare_to,
            commit=commit,
            best_case=best_case,
            neglect_days=neglect_days,
            change_points=change_points,
        )
    if as_json:
        typer.echo(json.dumps(jsonable(result.response), indent=2, allow_nan=False))
    else:
        render_forecast(result.response, out)
    if out_file is not None:
        write_table(result.deals, out_file)
        err.print(f"[green]wrote[/] {out_file}: {len(result.deals)} open deals", highlight=False)


@report_app.command("funnel")
@handle_errors
def report_funnel(
    data: DataOpt = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Count leads created on or after this day (YYYY-MM-DD)."),
    ] = None,
    as_of: AsOfOpt = None,
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            help="Grouping, repeatable: segment, source, signal, sequence, bdr, month or a lead "
            "column (default: all six).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    chart: Annotated[
        Path | None,
        typer.Option("--chart", help="Also draw the SQO rates with intervals to this PNG file."),
    ] = None,
    strict: StrictOpt = False,
) -> None:
    """Lead → meeting → SQO rates by group with 90% intervals and benchmark bands; SQO → won."""
    import json

    from features.funnel import DIMENSIONS, funnel
    from features.io import check_output_file, export_files, read_export

    folder = _data_dir(data)
    if chart is not None:
        if chart.suffix.lower() != ".png":
            raise InputError(
                f"--chart {chart}: the chart is a PNG image; give a file ending in .png."
            )
        check_output_file(chart, inputs=export_files(folder))
    with _reading_exports(strict):
        export = read_export(folder, require=("leads",))
    report = funnel(export, since=since, as_of=as_of, by=tuple(by or DIMENSIONS))
    if chart is not None:
        from serving.reports.charts import funnel_chart

        funnel_chart(report, chart)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        from serving.reports.funnel import render_funnel

        render_funnel(report, out)
    if chart is not None:
        err.print(f"[green]wrote[/] {chart}", highlight=False)


@report_app.command("calibration")
@handle_errors
def report_calibration(
    out_file: Annotated[
        Path, typer.Option("--out", help="The HTML file to write the page to (.html).")
    ],
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only predictions made as of this day or later (YYYY-MM-DD)."),
    ] = None,
    segment: Annotated[
        str | None, typer.Option("--segment", help="Only predictions of this segment.")
    ] = None,
    bins: Annotated[
        int,
        typer.Option("--bins", min=2, max=50, help="Probability bins of the reliability table."),
    ] = 10,
) -> None:
    """The calibration page offline: stored predictions against the outcomes known so far."""
    from features.io import check_output_file
    from features.periods import parse_date
    from serving.reports.pages import calibration_page, write_page

    if out_file.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--out {out_file}: the page is HTML; give a file ending in .html.")
    check_output_file(out_file)
    day = parse_date(since, "--since").date() if since is not None else None
    store = _store(_settings())
    try:
        store.ensure_schema(migrate=True)
        html = calibration_page(store, since=day, segment=segment, n_bins=bins)
    finally:
        store.dispose()
    write_page(html, out_file)
    err.print(f"[green]wrote[/] {out_file}", highlight=False)


@app.command()
@handle_errors
def backtest(
    data: DataOpt = None,
    periods: Annotated[
        int, typer.Option("--periods", help="How many past fiscal quarters to test.")
    ] = 4,
    weeks: Annotated[
        str,
        typer.Option("--weeks", help="Weeks of each quarter to forecast at (1-13), e.g. 1,4,8,12."),
    ] = "1,4,8,12",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write every forecast to this CSV/.parquet file.")
    ] = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Draw the forecasts vs actuals to this PNG.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the forecasts and summary as JSON.")
    ] = False,
    strict: StrictOpt = False,
) -> None:
    """Past quarters: the forecast made at several weeks vs what was won, beside stage-weighted.

    Each forecast uses a model trained only on what was known on its day (cached under the var
    folder); the summary, table and chart are logged to MLflow as a backtest run.
    """
    import json

    from features.io import check_output_file, export_files, read_export, write_table
    from training import tracking
    from training.backtest import (
        backtest_document,
        check_periods,
        log_backtest,
        parse_weeks,
        render_backtest,
        run_backtest,
    )
    from training.backtest_plots import plot_backtest

    chosen = parse_weeks(weeks)
    check_periods(periods)
    folder = _data_dir(data)
    if out_file is not None:
        check_output_file(out_file, inputs=export_files(folder))
    if chart is not None:
        if chart.suffix.lower() != ".png":
            raise InputError(f"--chart {chart}: give a .png file to draw the chart to.")
        check_output_file(chart, option="--chart", inputs=export_files(folder))
    settings = _settings()
    with _reading_exports(strict):
        export = read_export(folder, require=("opportunities",))
    with _progress() as progress:
        result = run_backtest(
            export,
            periods=periods,
            weeks=chosen,
            cache_dir=settings.var_dir / "backtest",
            progress=progress,
            min_closed_deals=settings.min_closed_deals,
            min_wins=settings.min_wins,
        )
    if out_file is not None:
        write_table(result.table, out_file)
        err.print(f"[green]wrote[/] {out_file}: {len(result.table)} forecasts", highlight=False)
    if chart is not None:
        plot_backtest(result.table, chart)
        err.print(f"[green]wrote[/] {chart}", highlight=False)
    run_id = log_backtest(
        result,
        tracking_uri=settings.mlflow_tracking_uri,
        artifact_location=tracking.artifact_location(settings),
        data_dir=folder,
        chart=chart,
    )
    if as_json:
        doc = {**backtest_document(result), "mlflow_run_id": run_id}
        typer.echo(json.dumps(doc, indent=2, allow_nan=False))
    else:
        render_backtest(result, out)
        err.print(f"logged to MLflow run {run_id}", highlight=False)


# ----------------------------------------------------------------------------------------
# serving
# ----------------------------------------------------------------------------------------


@app.command()
@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes (each loads both models).")
    ] = 1,
    prepare: Annotated[
        bool,
        typer.Option(
            "--prepare",
            help="First generate the demo export if it is missing and train if no champion model is registered.",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import os
    import socket

    import uvicorn

    from serving.app import create_app
    from serving.logs import log_config

    try:
        socket.getaddrinfo(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(
            f"--host {host!r} cannot be resolved to an address ({exc}); give an IP address "
            "such as 127.0.0.1 or 0.0.0.0 (every interface), or a host name of this machine."
        ) from None
    settings = _settings()
    if prepare:
        from pipecast.prepare import prepare as prepare_to_serve

        with _progress() as progress:
            prepare_to_serve(settings, progress=progress)
    # JSON lines on stderr, one per request (serving.logs); uvicorn applies the same
    # configuration in every worker process, so --workers N logs as one process does
    logging_config = log_config("DEBUG" if _state["debug"] else "INFO")
    # the worker processes inherit it: MLflow logs through our handler, not one of its own
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    if workers > 1:
        # each worker process builds its own app from the same environment
        uvicorn.run(
            "serving.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=logging_config,
            log_level="info",
            access_log=False,
            # every connection with TCP_NODELAY: a worker's socket otherwise waits ~40 ms per
            # kept-alive request (serving.app.NoDelayHTTPProtocol)
            http="serving.app:NoDelayHTTPProtocol",
        )
        return
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=logging_config,
        log_level="info",
        access_log=False,
        http="serving.app:NoDelayHTTPProtocol",
    )


def _store(settings: Settings) -> Any:
    from serving.store import Store

    return Store(settings.database_url, create_parent=settings.database_url_is_default)


@db_app.command("upgrade")
@handle_errors
def db_upgrade() -> None:
    """Create or migrate the prediction store's schema (PIPECAST_DATABASE_URL)."""
    store = _store(_settings())
    try:
        before = store.revision()
        after = store.upgrade()
    finally:
        store.dispose()
    change = "already at" if before == after else f"{before or 'empty'} →"
    err.print(f"[green]prediction store[/] {store.display_url}: {change} {after}", highlight=False)


@outcomes_app.command("sync")
@handle_errors
def outcomes_sync(data: DataOpt = None) -> None:
    """Read won/lost deals and settled SQO outcomes from a fresh export into the store."""
    from features.io import read_export
    from serving.service import sync_outcomes

    settings = _settings()
    export = read_export(_data_dir(data))
    store = _store(settings)
    try:
        store.ensure_schema(migrate=True)
        result = sync_outcomes(settings, store, export)
    finally:
        store.dispose()
    for what, counts in result.items():
        err.print(
            f"{what}: {counts['inserted']} new, {counts['updated']} changed, "
            f"{counts['unchanged']} already known",
            highlight=False,
        )


def _progress() -> Any:
    """A rich progress display on stderr (quiet when stderr is not a terminal)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


if __name__ == "__main__":  # pragma: no cover
    app()
