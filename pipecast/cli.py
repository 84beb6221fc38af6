"""The ``pipecast`` command line (interface.md). Exit 0 ok, 1 run-time failure, 2 bad input."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
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
app.add_typer(import_app, name="import")
app.add_typer(score_app, name="score")

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
    return Settings()


def _data_dir(data: Path | None) -> Path:
    return data if data is not None else _settings().data_dir


DataOpt = Annotated[
    Path | None, typer.Option("--data", help="CRM export folder (default: PIPECAST_DATA_DIR).")
]
AsOfOpt = Annotated[
    str | None,
    typer.Option("--as-of", help="Point in time, YYYY-MM-DD (default: the export date)."),
]


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
) -> None:
    """Write a synthetic B2B CRM export (plus truth/ with the generator's true probabilities)."""
    from features import synthetic
    from features.io import check_output_folder

    if fmt not in ("csv", "parquet"):
        raise InputError(f"--format {fmt!r}: choose csv or parquet.")
    check_output_folder(out_dir)
    with _progress() as progress:
        result = synthetic.simulate(
            seed=seed, n_opportunities=opportunities, n_leads=leads, progress=progress
        )
        synthetic.write_simulation(result, out_dir, fmt=fmt)
    err.print(f"[green]wrote[/] {out_dir} ({synthetic.describe(result)})", highlight=False)


@app.command()
@handle_errors
def validate(data: DataOpt = None) -> None:
    """Check an export against the contract; print counts, rates and pipeline warnings."""
    from features.io import read_export
    from features.report import render_validation, summarize

    export = read_export(_data_dir(data))
    render_validation(summarize(export), out)


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
    export = read_export(folder, require=("leads",) if leads else ("opportunities",))
    export.check_as_of(when)
    if snapshots:
        known = as_known_at(export, when)
        table = (
            lead_training_table(known)
            if leads
            else opportunity_training_table(known, freq=every)
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
def train(data: DataOpt = None, as_of: AsOfOpt = None) -> None:
    """Train both models on data known at --as-of, evaluate on a later slice, log to MLflow, gate."""
    from training.train import render_summary, run_training

    settings = _settings()
    with _progress() as progress:
        summary = run_training(settings, data_dir=_data_dir(data), as_of=as_of, progress=progress)
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
) -> None:
    """Score every opportunity open at --as-of with the champion close-probability model."""
    from features.io import check_output_file, export_files, write_table
    from serving.scoring import score_opportunities_cli

    folder = _data_dir(data)
    check_output_file(out_file, inputs=export_files(folder))
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
) -> None:
    """Rank a lead list by the champion SQO-likelihood model, best first."""
    from features.io import check_output_file, export_files, write_table
    from serving.scoring import score_leads_cli

    check_output_file(out_file, inputs=[file, *export_files(_data_dir(data))])
    table = score_leads_cli(_settings(), leads_file=file, data_dir=data, as_of=as_of)
    write_table(table, out_file)
    err.print(f"[green]wrote[/] {out_file}: {len(table)} leads ranked", highlight=False)


# ----------------------------------------------------------------------------------------
# serving
# ----------------------------------------------------------------------------------------


@app.command()
@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port.")] = 8000,
    prepare: Annotated[
        bool,
        typer.Option(
            "--prepare",
            help="First generate the demo export if it is missing and train if no champion model is registered.",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import socket

    import uvicorn

    from serving.app import create_app

    try:
        socket.getaddrinfo(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(
            f"--host {host!r} cannot be resolved to an address ({exc}); give an IP address "
            "such as 127.0.0.1 or 0.0.0.0 (every interface), or a host name of this machine."
        ) from None
    settings = _settings()
    if prepare:
        from serving.bootstrap import prepare as prepare_to_serve

        with _progress() as progress:
            prepare_to_serve(settings, progress=progress)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


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
