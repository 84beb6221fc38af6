"""Charts of a training run, drawn from tables computed elsewhere (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: charts are files logged to MLflow

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def reliability_diagram(tables: Mapping[str, pd.DataFrame], path: Path, *, title: str) -> Path:
    """Predicted vs observed per bin, one line per model, with Wilson intervals and counts.

    ``tables`` maps a model name to its reliability table (``models.calibration.reliability_table``).
    """
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(6.5, 7.5), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    width = 0.8 / max(len(tables), 1)
    for i, (name, t) in enumerate(tables.items()):
        filled = t[t["count"] > 0]
        ax.errorbar(
            filled["mean_predicted"],
            filled["observed_rate"],
            yerr=[
                (filled["observed_rate"] - filled["ci_low"]).clip(lower=0),
                (filled["ci_high"] - filled["observed_rate"]).clip(lower=0),
            ],
            marker="o",
            capsize=3,
            label=name,
        )
        centres = (t["lower"] + t["upper"]) / 2
        step = (t["upper"] - t["lower"]).median()
        axc.bar(centres - 0.4 * step + i * width * step, t["count"], width=width * step, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed rate (95% Wilson interval)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    axc.set_xlabel("predicted probability")
    axc.set_ylabel("rows")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def feature_importance_chart(
    importance: pd.Series, path: Path, *, title: str, top: int = 20
) -> Path:
    """Horizontal bars of the ``top`` features by gain."""
    imp = importance.sort_values(ascending=False).head(top)[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(imp) + 1.2))
    ax.barh(imp.index.astype(str), imp.to_numpy())
    ax.set_xlabel("total gain")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
