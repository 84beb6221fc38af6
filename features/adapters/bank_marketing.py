"""Import the UCI bank-marketing phone campaigns (Moro, Cortez & Rita) as a pipecast lead list.

Each row is a client called by the bank's outbound campaign; ``y`` (subscribed a term deposit)
plays the part of "became an SQO", so the export has **leads** with the label ``is_sqo`` and no
``sqo_at`` (the day of the conversion is not known).

``duration`` (length of the last call) is dropped: it is only known once the call is over and
all but gives the outcome away (a zero-second call is always "no").

Dates
-----
Neither file has a year. Both are ordered by date from May 2008 to November 2010, so the year
is rebuilt from the order: it starts at 2008 and goes up by one each time the month sequence
wraps (a month earlier in the year than the one before it: ``dec`` → ``mar``).

- ``bank-full.csv`` has the day of the month: ``created_at`` is that exact day.
- ``bank-additional-full.csv`` has only the weekday. Within a month, each run of consecutive
  rows on the same weekday is taken as one calling day and placed on the next date of the
  month with that weekday, in order. When a month holds more such runs than its calendar allows,
  that month's calling days are instead spread evenly over the month, still in order. The
  dates are approximate, but never out of order, so a date-ordered (out-of-time) split of the
  leads is the split the authors' ordering implies.

Columns
-------
``lead_id`` is stable: a prefix for the file plus the 1-based data row number
(``bank-add-000001`` is the first data row of ``bank-additional-full.csv``).
Contract columns filled where the meaning is honest: ``title`` = job (``unknown`` → empty),
``source`` = ``outbound`` (every client was called by the campaign), ``sequence`` = the contact
channel (``cellular`` / ``telephone``), ``signal_type`` = the outcome of a previous campaign
when there was one (``prior_campaign_success`` / ``prior_campaign_failure`` /
``prior_campaign_other``).
Everything else known before the call is kept as extra columns (dots in names become
underscores) and declared in ``dataset.yaml`` ``features: {leads: [...]}``: age, job, marital,
education, default, housing, loan, pdays, previously_contacted, previous, poutcome,
plus the five economic indicators (additional file) or balance (full file). ``job`` is kept
beside ``title`` because lead features read a title only through seniority and function
keywords, which occupations such as "blue-collar" never match. ``campaign`` (calls in this
campaign, including the last) is kept as a column but not declared: it is only complete once
the outcome is known. ``pdays`` = 999
(-1 in ``bank-full.csv``) means "not previously contacted": it becomes missing, and
``previously_contacted`` says so explicitly.
"""

from __future__ import annotations

import calendar
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from features.adapters._common import finish, read_text_table, require_columns
from features.errors import InputError
from features.io import DatasetConfig, Export

log = logging.getLogger(__name__)

FIRST_YEAR = 2008
MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}

ADDITIONAL = "bank-additional-full.csv"
FULL = "bank-full.csv"

#: source column → extra lead column, for columns known before the call (duration is not)
CLIENT_COLUMNS = ("age", "job", "marital", "education", "default", "housing", "loan")
CAMPAIGN_COLUMNS = ("campaign", "pdays", "previous", "poutcome")
ECONOMIC_COLUMNS = ("emp.var.rate", "cons.price.idx", "cons.conf.idx", "euribor3m", "nr.employed")
NUMERIC_COLUMNS = {"age", "campaign", "pdays", "previous", "balance", *ECONOMIC_COLUMNS}
#: value of pdays meaning "not previously contacted", per file
NOT_CONTACTED = {ADDITIONAL: "999", FULL: "-1"}
ID_PREFIX = {ADDITIONAL: "bank-add", FULL: "bank-full"}


def convert(src: Path) -> Export:
    """Convert a bank-marketing file (or its folder) into a pipecast lead list.

    Parameters
    ----------
    src
        ``bank-additional-full.csv``, ``bank-full.csv`` or the folder holding them; given the
        folder, ``bank-additional-full.csv`` is preferred (it has the economic indicators).

    Returns
    -------
    An export with ``leads`` only: ``lead_id``, an approximate ``created_at`` (see the module
    docstring), ``is_sqo`` (``y == "yes"``) and the columns known before the call.

    Raises
    ------
    InputError
        No such file, or the file is not one of the two bank-marketing files.
    ContractError
        The file lacks a column the import needs, or has values that cannot be converted.
    """
    path = _source_file(Path(src))
    kind = FULL if "day" in _header(path) else ADDITIONAL
    raw = read_text_table(path, sep=";")
    if raw.empty:
        raise InputError(
            f"{path.name}: no data rows (only a header); expected one client per line below it, "
            f"as in the downloaded {ADDITIONAL} or {FULL}."
        )
    economic = ECONOMIC_COLUMNS if kind == ADDITIONAL else ()
    client = CLIENT_COLUMNS + (("balance",) if kind == FULL else ())
    day_column = "day" if kind == FULL else "day_of_week"
    require_columns(
        raw,
        path,
        ("job", "contact", "month", day_column, "y", *client, *CAMPAIGN_COLUMNS, *economic),
    )

    created_at = (
        dates_from_day_of_month(raw["month"], raw["day"], path)
        if kind == FULL
        else dates_from_weekday(raw["month"], raw["day_of_week"], path)
    )
    y = raw["y"].str.strip().str.lower()
    bad_y = ~y.isin(["yes", "no"])
    if bad_y.any():
        raise InputError(
            f"{path.name}, column 'y': {int(bad_y.sum())} value(s) are neither yes nor no (first "
            f"at line {int(np.flatnonzero(bad_y)[0]) + 2})."
        )

    leads = pd.DataFrame(
        {
            "lead_id": [f"{ID_PREFIX[kind]}-{i:06d}" for i in range(1, len(raw) + 1)],
            "created_at": created_at,
            "is_sqo": (y == "yes").astype("boolean"),
            "title": _unknown_to_missing(raw["job"]),
            "source": "outbound",
            "sequence": _unknown_to_missing(raw["contact"]),
            "signal_type": raw["poutcome"].map(
                {
                    "success": "prior_campaign_success",
                    "failure": "prior_campaign_failure",
                    "other": "prior_campaign_other",
                }
            ),
        }
    )
    extras: list[str] = []
    for column in (*client, *CAMPAIGN_COLUMNS, *economic):
        name = column.replace(".", "_")
        values = raw[column]
        if column in NUMERIC_COLUMNS:
            values = _to_number(values, path, column)
        leads[name] = values
        # ``campaign`` counts the calls of *this* campaign including the last one: it is only
        # complete once the outcome is known (calls stop at a yes), so it is kept as a column
        # but never declared as a pre-sequencing feature.
        if column != "campaign":
            extras.append(name)
        if column == "pdays":
            not_contacted = (raw["pdays"].str.strip() == NOT_CONTACTED[kind]).to_numpy(dtype=bool)
            leads["pdays"] = leads["pdays"].mask(not_contacted)
            leads["previously_contacted"] = pd.array(~not_contacted, dtype="boolean")
            extras.append("previously_contacted")

    config = DatasetConfig(
        exported_at=pd.Timestamp(leads["created_at"].max()).normalize(),
        features={"leads": extras},
    )
    export = finish({"leads": leads}, config, {"leads": path})
    log.info(
        "bank marketing: %d leads from %s, %s .. %s, SQO share %.3f",
        len(leads),
        path.name,
        leads["created_at"].min().date(),
        leads["created_at"].max().date(),
        float(leads["is_sqo"].mean()),
    )
    return export


def years_from_order(month: pd.Series) -> np.ndarray:
    """The year of each row of a date-ordered file without years: +1 whenever the month wraps."""
    number = month.to_numpy(dtype=int)
    wraps = np.concatenate([[0], (np.diff(number) < 0).astype(int)])
    return FIRST_YEAR + np.cumsum(wraps)


def dates_from_day_of_month(month: pd.Series, day: pd.Series, path: Path) -> pd.Series:
    """Dates of ``bank-full.csv`` rows: the given day, in the year implied by the order."""
    number = _month_numbers(month, path)
    years = years_from_order(number)
    day_number = pd.to_numeric(day, errors="coerce")
    if day_number.isna().any():
        raise InputError(
            f"{path.name}, column 'day': {int(day_number.isna().sum())} value(s) are not days of "
            "the month."
        )
    last_day = np.array(
        [calendar.monthrange(int(y), int(m))[1] for y, m in zip(years, number, strict=True)]
    )
    days = np.minimum(day_number.to_numpy(dtype=int), last_day)
    return pd.Series(
        pd.to_datetime({"year": years, "month": number.to_numpy(), "day": days}), index=month.index
    )


def dates_from_weekday(month: pd.Series, weekday: pd.Series, path: Path) -> pd.Series:
    """Approximate dates of ``bank-additional-full.csv`` rows from month and weekday in file order.

    Within each month (of the year implied by the order), a run of consecutive rows with the
    same weekday is one calling day, placed on the next date of that month with that weekday.
    A month with more runs than it has matching dates has its runs spread evenly over its days.
    """
    number = _month_numbers(month, path)
    years = years_from_order(number)
    wd = weekday.str.strip().str.lower().map(WEEKDAYS)
    if wd.isna().any():
        bad = sorted(set(weekday[wd.isna()].fillna("").astype(str)))[:5]
        raise InputError(
            f"{path.name}, column 'day_of_week': unknown weekday(s) {', '.join(map(repr, bad))}; "
            "expected mon … fri."
        )
    wd_values = wd.to_numpy(dtype=int)
    month_block = np.concatenate([[0], np.cumsum(np.diff(number.to_numpy()) != 0)])
    run_start = np.concatenate([[True], (np.diff(wd_values) != 0) | (np.diff(month_block) != 0)])
    run_id = np.cumsum(run_start) - 1
    first_row_of_run = np.flatnonzero(run_start)
    run_day = np.empty(len(first_row_of_run), dtype=int)
    for block in np.unique(month_block):
        runs = np.unique(run_id[month_block == block])
        row = first_row_of_run[runs[0]]
        year, month_no = int(years[row]), int(number.iloc[row])
        n_days = calendar.monthrange(year, month_no)[1]
        placed = _place_on_weekdays(year, month_no, n_days, wd_values[first_row_of_run[runs]])
        if placed is None:
            log.debug(
                "bank marketing: %d-%02d has more calling days than dates; spread evenly",
                year,
                month_no,
            )
            placed = 1 + np.floor(np.arange(len(runs)) * n_days / len(runs)).astype(int)
        run_day[runs] = placed
    days = run_day[run_id]
    return pd.Series(
        pd.to_datetime({"year": years, "month": number.to_numpy(), "day": days}), index=month.index
    )


def _place_on_weekdays(
    year: int, month: int, n_days: int, weekdays: np.ndarray
) -> np.ndarray | None:
    """Each calling day on the next date with its weekday, in order.

    ``None`` when the month is too short to hold them all.
    """
    first_weekday = calendar.weekday(year, month, 1)
    out = np.empty(len(weekdays), dtype=int)
    day = 0  # the last date used
    for i, target in enumerate(weekdays):
        candidate = day + 1
        candidate += (int(target) - (first_weekday + candidate - 1)) % 7
        if candidate > n_days:
            return None
        out[i] = candidate
        day = candidate
    return out


def _month_numbers(month: pd.Series, path: Path) -> pd.Series:
    number = month.str.strip().str.lower().map(MONTHS)
    if number.isna().any():
        bad = sorted(set(month[number.isna()].fillna("").astype(str)))[:5]
        raise InputError(
            f"{path.name}, column 'month': unknown month(s) {', '.join(map(repr, bad))}; "
            "expected jan … dec."
        )
    return number.astype(int)


def _source_file(src: Path) -> Path:
    if src.is_dir():
        for name in (ADDITIONAL, FULL):
            if (src / name).is_file():
                if name == FULL:
                    log.info("bank marketing: %s not found in %s; using %s", ADDITIONAL, src, FULL)
                return src / name
        raise InputError(
            f"{src}: holds neither {ADDITIONAL} nor {FULL}. Give one of those files or the "
            "folder holding it."
        )
    if not src.is_file():
        raise InputError(
            f"{src}: no such file. Give {ADDITIONAL}, {FULL} or the folder holding them."
        )
    return src


def _header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            first = fh.readline()
    except UnicodeDecodeError:
        raise InputError(
            f"{path.name}: not a bank-marketing file (not UTF-8 text); expected the "
            f"';'-separated {ADDITIONAL} or {FULL} as downloaded."
        ) from None
    columns = [c.strip().strip('"') for c in first.strip().split(";")]
    if "y" not in columns or "month" not in columns:
        raise InputError(
            f"{path.name}: not a bank-marketing file (header {first.strip()[:120]!r}); expected "
            f"the ';'-separated {ADDITIONAL} or {FULL}."
        )
    return columns


def _unknown_to_missing(values: pd.Series) -> pd.Series:
    return values.mask(values.str.strip().str.lower() == "unknown")


def _to_number(values: pd.Series, path: Path, column: str) -> pd.Series:
    parsed = pd.to_numeric(values.str.strip(), errors="coerce").astype("float64")
    bad = (values.notna() & parsed.isna()).to_numpy(dtype=bool)
    if bad.any():
        raise InputError(
            f"{path.name}, column '{column}': {int(bad.sum())} value(s) are not numbers (first "
            f"at line {int(np.flatnonzero(bad)[0]) + 2})."
        )
    return parsed
