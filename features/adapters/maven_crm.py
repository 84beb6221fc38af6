"""Import the Maven Analytics "CRM + Sales + Opportunities" dataset as a pipecast export.

The source folder holds ``sales_pipeline.csv`` (one row per deal), ``accounts.csv``,
``products.csv`` and ``sales_teams.csv``. What the data allows to rebuild:

- ``created_at`` is ``engage_date`` (the day the deal entered Engaging, i.e. became pipeline);
  ``closed_at`` is ``close_date`` on Won/Lost deals.
- ``status``: Won → won, Lost → lost, Engaging → open. ``stage`` keeps the dataset's own names.
- ``amount``: ``close_value`` on won deals; the product's list price (``sales_price``) on open
  and lost deals, whose ``close_value`` is empty or 0. The pipeline spells "GTX Pro" as
  "GTXPro"; products are matched after that correction.
- ``account_id`` is the account name (the dataset's key); it is blank on many open deals and
  stays empty then (the contract allows it).
- ``owner_id`` is the sales agent, ``region`` the agent's regional office, ``industry`` the
  account's sector (kept as spelled in the source), ``segment`` from the account's employees:
  SMB below 1,000, Mid-Market below 5,000, Enterprise from 5,000 (:data:`SEGMENT_BOUNDS`).
  A deal without an account has no segment.
- There is no stage history: a deal is only known to be open from ``engage_date`` until
  ``close_date``.
- Prospecting deals are left out (see :func:`convert_with_report`).

``dataset.yaml`` declares the stages Prospecting and Engaging (open, without probabilities: the
dataset has none), Won and Lost, and ``exported_at`` = the last date in the data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.adapters._common import finish, read_text_table, require_columns, require_file
from features.contract import ContractError, Problem
from features.errors import InputError
from features.io import DatasetConfig, Export, StageDef

log = logging.getLogger(__name__)

#: (upper bound exclusive, segment) on the account's employee count; anything larger is the last
SEGMENT_BOUNDS: tuple[tuple[float, str], ...] = ((1000, "SMB"), (5000, "Mid-Market"))
LARGEST_SEGMENT = "Enterprise"

#: pipeline spellings of products that differ from products.csv
PRODUCT_ALIASES = {"GTXPro": "GTX Pro"}

STATUS_OF_STAGE = {"Won": "won", "Lost": "lost", "Engaging": "open", "Prospecting": "open"}

STAGES = [
    StageDef("Prospecting"),
    StageDef("Engaging"),
    StageDef("Won", won=True),
    StageDef("Lost", lost=True),
]

PIPELINE_COLUMNS = (
    "opportunity_id",
    "sales_agent",
    "product",
    "account",
    "deal_stage",
    "engage_date",
    "close_date",
    "close_value",
)


@dataclass(frozen=True)
class ConversionReport:
    """What the import did besides converting rows one to one."""

    #: deals in the source
    n_source: int
    #: Prospecting deals left out: they have no date at all
    skipped_prospecting: int
    #: deals whose account is blank (kept, with an empty account_id and segment)
    no_account: int


def convert(src: Path) -> Export:
    """Convert the Maven CRM folder ``src`` into a pipecast export.

    See :func:`convert_with_report`; this drops the report after logging it.
    """
    export, _ = convert_with_report(src)
    return export


def convert_with_report(src: Path) -> tuple[Export, ConversionReport]:
    """Convert the Maven CRM folder ``src`` and say what was left out.

    Prospecting deals are skipped. They have neither ``engage_date`` nor ``close_date``, so
    nothing tells when they entered the pipeline or whether they were still there at any past
    date. Giving them a made-up ``created_at`` (say, the export date) would put 500 deals into
    every as-of snapshot near the end of the data and distort both the open pipeline and the
    point-in-time training set. The number skipped is returned and logged.

    Parameters
    ----------
    src
        The folder holding ``sales_pipeline.csv``, ``accounts.csv``, ``products.csv`` and
        ``sales_teams.csv`` (or one of those files: its folder is used).

    Returns
    -------
    The export (opportunities only, no stage history) and a :class:`ConversionReport`.

    Raises
    ------
    InputError
        The folder or one of the four files is missing.
    ContractError
        A file lacks a column the import needs, or the converted deals break the contract.
    """
    folder = Path(src)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(
            f"{folder}: no such folder. Give the folder holding the Maven CRM files "
            "(sales_pipeline.csv, accounts.csv, products.csv, sales_teams.csv)."
        )
    what = "The Maven CRM import"
    pipeline_file = require_file(folder, "sales_pipeline.csv", what)
    accounts_file = require_file(folder, "accounts.csv", what)
    products_file = require_file(folder, "products.csv", what)
    teams_file = require_file(folder, "sales_teams.csv", what)

    pipeline = read_text_table(pipeline_file)
    accounts = read_text_table(accounts_file)
    products = read_text_table(products_file)
    teams = read_text_table(teams_file)
    require_columns(pipeline, pipeline_file, PIPELINE_COLUMNS)
    require_columns(accounts, accounts_file, ("account", "sector", "employees"))
    require_columns(products, products_file, ("product", "sales_price"))
    require_columns(teams, teams_file, ("sales_agent", "regional_office"))

    _check_stages(pipeline, pipeline_file)
    n_source = len(pipeline)
    prospecting = (pipeline["deal_stage"] == "Prospecting").to_numpy(dtype=bool)
    if prospecting.any():
        log.info(
            "Maven CRM: skipped %d Prospecting deals: they have no engage or close date",
            int(prospecting.sum()),
        )
    deals = pipeline.loc[~prospecting].reset_index(drop=True)
    if deals.empty:
        why = (
            f"all {n_source} are Prospecting deals, which have no dates"
            if n_source
            else "only a header"
        )
        raise InputError(
            f"{pipeline_file.name}: no deals to import ({why}); expected Engaging, Won or Lost "
            "deals, one per line below the header."
        )

    product = deals["product"].replace(PRODUCT_ALIASES)
    price = _to_number(
        products.set_index("product")["sales_price"],
        products_file,
        "sales_price",
        np.arange(len(products)) + 2,
    )
    list_price = product.map(price)
    won = (deals["deal_stage"] == "Won").to_numpy(dtype=bool)
    close_value = _to_number(
        deals["close_value"], pipeline_file, "close_value", np.flatnonzero(~prospecting) + 2
    )
    amount = pd.Series(np.where(won, close_value, list_price), index=deals.index, dtype="float64")
    unpriced = amount.isna().to_numpy(dtype=bool)
    if unpriced.any():
        names = sorted(set(product[unpriced & ~won].dropna().astype(str)))[:5]
        raise ContractError(
            [
                Problem(
                    file=pipeline_file.name,
                    column="product" if names else "close_value",
                    message=f"{int(unpriced.sum())} deal(s) have no amount"
                    + (
                        f": product(s) {', '.join(map(repr, names))} are not in "
                        f"{products_file.name}"
                        if names
                        else ": won deals without close_value"
                    ),
                    expected=(
                        "every product listed in products.csv and a close_value on every won deal"
                    ),
                )
            ]
        )

    unique_accounts = accounts.drop_duplicates("account")
    account_info = unique_accounts.set_index("account")
    employees = _to_number(
        account_info["employees"],
        accounts_file,
        "employees",
        unique_accounts.index.to_numpy() + 2,
    )
    region_of_agent = teams.drop_duplicates("sales_agent").set_index("sales_agent")[
        "regional_office"
    ]
    unknown_agents = sorted(set(deals["sales_agent"].dropna()) - set(region_of_agent.index))
    if unknown_agents:
        log.warning(
            "Maven CRM: %d sales agent(s) not in %s (no region): %s",
            len(unknown_agents),
            teams_file.name,
            ", ".join(unknown_agents[:5]),
        )

    opportunities = pd.DataFrame(
        {
            "opportunity_id": deals["opportunity_id"],
            "account_id": deals["account"],
            "created_at": deals["engage_date"],
            "stage": deals["deal_stage"],
            "status": deals["deal_stage"].map(STATUS_OF_STAGE),
            "closed_at": deals["close_date"].where(deals["deal_stage"].isin(["Won", "Lost"])),
            "amount": amount,
            "segment": deals["account"].map(segment_of(employees)),
            "owner_id": deals["sales_agent"],
            "industry": deals["account"].map(account_info["sector"]),
            "region": deals["sales_agent"].map(region_of_agent),
            "product": product,
        }
    )
    dates = pd.concat(
        [
            pd.to_datetime(deals[c], errors="coerce", format="ISO8601")
            for c in ("engage_date", "close_date")
        ]
    )
    config = DatasetConfig(
        exported_at=None if dates.isna().all() else pd.Timestamp(dates.max()).normalize(),
        stages=list(STAGES),
    )
    export = finish({"opportunities": opportunities}, config, {"opportunities": pipeline_file})
    report = ConversionReport(
        n_source=n_source,
        skipped_prospecting=int(prospecting.sum()),
        no_account=int(deals["account"].isna().sum()),
    )
    log.info(
        "Maven CRM: %d of %d deals converted (%d Prospecting skipped, %d without account)",
        len(opportunities),
        n_source,
        report.skipped_prospecting,
        report.no_account,
    )
    return export, report


def segment_of(employees: pd.Series) -> pd.Series:
    """The segment of each account from its employee count (:data:`SEGMENT_BOUNDS`)."""
    out = pd.Series(LARGEST_SEGMENT, index=employees.index, dtype="string")
    for bound, name in reversed(SEGMENT_BOUNDS):
        out = out.mask(employees < bound, name)
    return out.mask(employees.isna())


def _check_stages(pipeline: pd.DataFrame, path: Path) -> None:
    bad = (~pipeline["deal_stage"].isin(list(STATUS_OF_STAGE))).to_numpy(dtype=bool)
    if bad.any():
        found = sorted(set(pipeline.loc[bad, "deal_stage"].fillna("").astype(str)))[:5]
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    column="deal_stage",
                    message=(
                        f"{int(bad.sum())} deal(s) have an unknown stage "
                        f"({', '.join(map(repr, found))})"
                    ),
                    lines=tuple(int(i) + 2 for i in np.flatnonzero(bad)[:20]),
                    n_rows=int(bad.sum()),
                    expected="Prospecting, Engaging, Won or Lost",
                )
            ]
        )


def _to_number(values: pd.Series, path: Path, column: str, lines: np.ndarray) -> pd.Series:
    """``values`` as numbers; ``lines`` are their line numbers in ``path``, for the message."""
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = (values.notna() & parsed.isna()).to_numpy(dtype=bool)
    if bad.any():
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    column=column,
                    message=f"{int(bad.sum())} value(s) are not numbers",
                    lines=tuple(int(n) for n in lines[bad][:20]),
                    n_rows=int(bad.sum()),
                    expected="plain numbers",
                )
            ]
        )
    return parsed
