"""Charts of the reports, drawn from tables computed elsewhere (matplotlib, Agg backend).

Compute and draw apart: :mod:`features.funnel` computes the funnel; :func:`funnel_chart` only
draws it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: charts are files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from features.funnel import BAND_EDGES, BAND_NAMES, CONFIDENCE, FunnelReport  # noqa: E402

#: band shading, poor → excellent
BAND_COLOURS = ("#f4c7c3", "#fce8b2", "#c8e6c9", "#bbdefb")
#: groups shown per panel at most (the largest; months all, in order)
MAX_GROUPS = 15


def funnel_figure(report: FunnelReport) -> Figure:
    """Meeting → SQO rate per group with its interval, one panel per grouping, bands shaded.

    A point is the rate, the bar its 90% interval (wide for small groups), the number beside it
    the meetings it rests on; the shaded bands are domain.md's (poor < 25% ≤ average < 40% ≤
    good < 60% ≤ excellent or bar too low). The dashed line is the overall rate.
    """
    rates = report.rates
    dims = [d for d in dict.fromkeys(rates["dimension"]) if d != "all"]
    overall = rates.loc[rates["dimension"] == "all", "meeting_to_sqo"]
    panels = [
        # the latest months, the largest other groups
        rates.loc[rates["dimension"] == d].pipe(
            lambda t, d=d: t.tail(MAX_GROUPS) if d == "month" else t.head(MAX_GROUPS)
        )
        for d in dims
    ] or [rates.loc[rates["dimension"] == "all"]]
    heights = [max(len(p), 2) * 0.32 + 0.9 for p in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(8.5, sum(heights) + 0.8),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    edges = (0.0, *BAND_EDGES, 1.0)
    for ax, panel, name in zip(axes[:, 0], panels, dims or ["all"], strict=True):
        y = np.arange(len(panel))[::-1]
        for i, colour in enumerate(BAND_COLOURS):
            ax.axvspan(edges[i], edges[i + 1], color=colour, zorder=0)
        rate = panel["meeting_to_sqo"].to_numpy(dtype="float64")
        low = panel["meeting_to_sqo_low"].to_numpy(dtype="float64")
        high = panel["meeting_to_sqo_high"].to_numpy(dtype="float64")
        ok = ~np.isnan(rate)
        ax.errorbar(
            rate[ok],
            y[ok],
            xerr=np.vstack([rate[ok] - low[ok], high[ok] - rate[ok]]),
            fmt="o",
            color="#263238",
            ecolor="#455a64",
            capsize=3,
            markersize=5,
            zorder=3,
        )
        for yi, hi, n in zip(y[ok], high[ok], panel["meetings"].to_numpy()[ok], strict=True):
            ax.text(
                min(hi + 0.015, 0.9), yi, f"{int(n)} meetings", va="center", fontsize=7, zorder=4
            )
        if len(overall) and not np.isnan(overall.iloc[0]):
            ax.axvline(float(overall.iloc[0]), color="#37474f", linestyle="--", linewidth=1)
        ax.set_yticks(y)
        ax.set_yticklabels([str(g) for g in panel["group"]], fontsize=8)
        ax.set_ylim(-0.7, len(panel) - 0.3)
        ax.set_xlim(0, 1)
        ax.set_title(f"by {name}", loc="left", fontsize=9, fontweight="bold")
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel(f"meeting → SQO rate ({CONFIDENCE:.0%} Wilson interval)", fontsize=9)
    since = "" if report.since is None else f"leads created since {report.since.date()}, "
    fig.suptitle(
        f"SQO rate by group — {since}settled by {report.as_of.date()}",
        fontsize=11,
        x=0.02,
        ha="left",
    )
    fig.legend(
        handles=[
            *(Patch(color=c, label=n) for c, n in zip(BAND_COLOURS, BAND_NAMES, strict=True)),
            Line2D([], [], color="#37474f", linestyle="--", linewidth=1, label="overall rate"),
        ],
        loc="lower center",
        ncol=5,
        fontsize=8,
        frameon=False,
    )
    # room for the title above and the legend of the bands below
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1 - 0.3 / height))
    return fig


def funnel_chart(report: FunnelReport, path: str | Path) -> Path:
    """Draw :func:`funnel_figure` to a PNG file at ``path``."""
    fig = funnel_figure(report)
    target = Path(path)
    try:
        fig.savefig(target, dpi=110)
    finally:
        plt.close(fig)
    return target
