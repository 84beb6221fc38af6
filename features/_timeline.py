"""Small time helpers shared by the point-in-time builders.

"As of D" always means the END of day D: an event is known at D when its timestamp is strictly
before midnight after D (``bound = D + 1 day``). Everything here works with that exclusive bound.

:class:`EventIndex` answers "how many events of group g happened before bound b" and "which was
the last one" for millions of (group, bound) queries at once, with one sorted array of packed
int64 keys and ``numpy.searchsorted``: it is the vectorised equivalent of ``merge_asof`` that the
batch builders (many as-of dates at once) rely on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import InputError

DAY = pd.Timedelta(days=1)

# keys pack (group code, whole seconds since 1900) into one int64: 33 bits of seconds cover
# 1900..2172, the remaining 30 bits up to a billion groups
_SHIFT = 33
_BASE = np.datetime64("1900-01-01T00:00:00", "s")
_MAX_SECONDS = (1 << _SHIFT) - 1


def as_day(when: Any, what: str = "as_of") -> pd.Timestamp:
    """``when`` as a day (midnight), validating that it is a date."""
    try:
        ts = pd.Timestamp(when)
    except (TypeError, ValueError):
        raise InputError(f"{what} {when!r} is not a date: give a day such as 2026-03-14.") from None
    if pd.isna(ts):
        raise InputError(f"{what} is empty: give a day such as 2026-03-14.")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.normalize()


def end_bound(day: pd.Timestamp) -> pd.Timestamp:
    """The first instant after day ``day``: events strictly before it are known at ``day``."""
    return day + DAY


def seconds(values: Any) -> np.ndarray:
    """Whole seconds since 1900 (floored), clipped to the packable range; NaT → -1."""
    arr = np.asarray(values, dtype="datetime64[ns]")
    nat = np.isnat(arr)
    # floor to the second: bounds are whole days, so flooring never moves an event across one
    secs = (arr.astype("datetime64[s]") - _BASE).astype(np.int64)
    secs = np.clip(secs, 0, _MAX_SECONDS)
    secs[nat] = -1
    return secs


def group_codes(event_ids: Any, query_ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for the groups of events and of queries.

    A missing id is no group: such events get code -1 (ignored by :class:`EventIndex`) and such
    queries a code no event has (they match nothing).
    """
    ev = pd.Series(event_ids).reset_index(drop=True)
    q = pd.Series(query_ids).reset_index(drop=True)
    both = pd.concat([ev.astype("string"), q.astype("string")], ignore_index=True)
    codes, uniques = pd.factorize(both)
    codes = codes.astype(np.int64)
    ev_codes = codes[: len(ev)].copy()
    q_codes = codes[len(ev) :].copy()
    q_codes[q_codes < 0] = len(uniques)
    return ev_codes, q_codes


class EventIndex:
    """Timed events grouped by an integer code, for vectorised "before bound" look-ups.

    Parameters
    ----------
    groups
        Non-negative int64 group code per event.
    times
        Event timestamps (``datetime64``); events with NaT are ignored.
    """

    def __init__(self, groups: np.ndarray, times: Any) -> None:
        groups = np.asarray(groups, dtype=np.int64)
        secs = seconds(times)
        keep = (secs >= 0) & (groups >= 0)
        self.positions = np.flatnonzero(keep)
        keys = (groups[keep] << _SHIFT) | secs[keep]
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        #: for each sorted key, the row of the original event
        self.rows = self.positions[order]

    def _query(self, groups: np.ndarray, bounds: Any) -> tuple[np.ndarray, np.ndarray]:
        groups = np.asarray(groups, dtype=np.int64)
        secs = seconds(bounds)
        q = (groups << _SHIFT) | np.maximum(secs, 0)
        return q, secs < 0

    def count_before(self, groups: np.ndarray, bounds: Any) -> np.ndarray:
        """Events of each query's group strictly before its bound (0 for a NaT bound)."""
        q, nat = self._query(groups, bounds)
        start = np.searchsorted(self.keys, np.asarray(groups, dtype=np.int64) << _SHIFT, "left")
        out = np.searchsorted(self.keys, q, "left") - start
        out[nat] = 0
        return out.astype(np.int64)

    def last_before(self, groups: np.ndarray, bounds: Any) -> np.ndarray:
        """Row (in the original event order) of the last event of the group before the bound,
        or -1 when there is none."""
        groups = np.asarray(groups, dtype=np.int64)
        q, nat = self._query(groups, bounds)
        pos = np.searchsorted(self.keys, q, "left") - 1
        valid = pos >= 0
        safe = np.where(valid, pos, 0)
        if len(self.keys):
            valid &= (self.keys[safe] >> _SHIFT) == groups
            out = np.where(valid, self.rows[safe] if len(self.rows) else -1, -1)
        else:
            out = np.full(len(groups), -1, dtype=np.int64)
        out[nat] = -1
        return out.astype(np.int64)


def count_before_all(times: Any, bounds: Any) -> np.ndarray:
    """Events (of any group) strictly before each bound."""
    secs = seconds(times)
    secs = np.sort(secs[secs >= 0])
    b = seconds(bounds)
    out = np.searchsorted(secs, np.maximum(b, 0), "left").astype(np.int64)
    out[b < 0] = 0
    return out


def member(values: Any, allowed: Any) -> np.ndarray:
    """Whether each of ``values`` is one of ``allowed`` (text ids; missing is never a member).

    ``Series.isin`` on Arrow-backed strings builds the allowed set one Python scalar at a time,
    which dominates a cut of a large export; Arrow's own ``is_in`` does it natively.
    """
    v = _arrow_strings(values)
    a = _arrow_strings(allowed)
    found = pc.is_in(v, value_set=a, skip_nulls=True)
    return np.asarray(pc.fill_null(found, False).to_numpy(zero_copy_only=False), dtype=bool)


def _arrow_strings(values: Any) -> pa.Array:
    arr = pa.array(pd.Series(values).astype("string").array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    return arr


def days_between(later: Any, earlier: Any) -> np.ndarray:
    """Whole days from ``earlier`` to ``later`` (both floored to the day); NaN if either is NaT."""
    a = np.asarray(pd.to_datetime(later), dtype="datetime64[ns]").astype("datetime64[D]")
    b = np.asarray(pd.to_datetime(earlier), dtype="datetime64[ns]").astype("datetime64[D]")
    out = (a - b).astype("timedelta64[D]").astype(np.float64)
    out[np.isnat(a) | np.isnat(b)] = np.nan
    return out


def shrunk_rate(hits: np.ndarray, n: np.ndarray, prior: np.ndarray, strength: float) -> np.ndarray:
    """``(hits + k·prior) / (n + k)``: a group rate pulled toward ``prior`` when ``n`` is small.

    NaN where the prior is unknown (nothing decided yet anywhere).
    """
    hits = np.asarray(hits, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    return (hits + strength * prior) / (n + strength)
