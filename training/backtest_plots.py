"""The backtest chart: the forecast through each past quarter against what was actually won.

Drawing only: the numbers come from :func:`training.backtest.run_backtest`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_backtest(table: pd.DataFrame, path: Path) -> Path:
    """Draw one panel per quarter to a PNG at ``path``.

    In each panel, by the week of the quarter the forecast was made at: pipecast's forecast with
    its P10–P90 range, the CRM's stage-weighted number, the bookings already won at that point,
    and a horizontal line at the bookings the quarter actually closed with.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    quarters = list(dict.fromkeys(table["period"]))
    fig, axes = plt.subplots(
        1, len(quarters), figsize=(3.3 * len(quarters) + 1.2, 4.0), sharey=True, squeeze=False
    )
    scale = 1e6 if float(table["actual"].abs().max()) >= 1e6 else 1e3
    unit = "M" if scale == 1e6 else "k"
    for ax, quarter in zip(axes[0], quarters, strict=True):
        t = table[table["period"] == quarter].sort_values("week")
        weeks = t["week"].to_numpy()
        ax.fill_between(
            weeks,
            t["p10"] / scale,
            t["p90"] / scale,
            alpha=0.25,
            color="tab:blue",
            label="pipecast P10–P90",
        )
        ax.plot(weeks, t["forecast"] / scale, marker="o", color="tab:blue", label="pipecast")
        ax.plot(
            weeks,
            t["stage_weighted"] / scale,
            marker="s",
            linestyle="--",
            color="tab:orange",
            label="stage-weighted",
        )
        ax.bar(
            weeks, t["won_to_date"] / scale, width=0.8, color="0.85", label="won to date", zorder=0
        )
        ax.axhline(float(t["actual"].iloc[0]) / scale, color="black", linewidth=1.2, label="actual")
        ax.set_title(str(quarter))
        ax.set_xlabel("week of the quarter")
        ax.set_xticks(weeks)
        ax.set_xlim(0.3, 13.7)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("bookings")
    axes[0][0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.1f}{unit}"))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Forecast made during each quarter vs the bookings actually won", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
