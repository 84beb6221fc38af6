"""The summary of a cut lead list as rich tables (``pipecast score leads`` prints it on stderr)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def render_list_summary(summary: dict[str, Any], console: Console) -> None:
    """Rules applied, leads kept and excluded by reason, expected SQOs per tier and per BDR."""
    console.print(
        f"[bold]lead list[/] as of {summary['as_of']} (model v{summary.get('model_version', '?')}):"
        f" {summary['kept']} of {summary['leads']} leads kept, "
        f"{summary['expected_sqos']:.1f} expected SQOs",
        highlight=False,
    )
    for rule in summary["rules"]:
        console.print(f"  • {rule}", highlight=False)
    if summary["excluded_by_reason"]:
        table = Table(title="excluded", title_justify="left")
        table.add_column("reason")
        table.add_column("leads", justify="right")
        for reason, count in summary["excluded_by_reason"].items():
            table.add_row(reason, str(count))
        console.print(table)
    tiers = Table(title=f"tiers ({summary['tiers']['by']})", title_justify="left")
    for name in ("tier", "leads", "expected SQOs", "mean P(SQO)", "from P(SQO)"):
        tiers.add_column(name, justify="left" if name == "tier" else "right")
    for row in summary["by_tier"]:
        mean = row["mean_sqo_probability"]
        low = row["min_sqo_probability"]
        tiers.add_row(
            row["tier"],
            str(row["leads"]),
            f"{row['expected_sqos']:.1f}",
            "–" if mean is None else f"{100 * mean:.1f}%",
            "–" if low is None else f"{100 * low:.1f}%",
        )
    console.print(tiers)
    if "by_bdr" in summary:
        bdrs = Table(title="allocation", title_justify="left")
        for name in ("BDR", "capacity", "leads", "expected SQOs"):
            bdrs.add_column(name, justify="left" if name == "BDR" else "right")
        for row in summary["by_bdr"]:
            bdrs.add_row(
                row["bdr"], str(row["capacity"]), str(row["leads"]), f"{row['expected_sqos']:.2f}"
            )
        console.print(bdrs)
        a = summary["allocation"]
        console.print(
            f"  expected SQOs per BDR differ by {a['spread_expected_sqos']:.2f} at most "
            f"(one lead's worth: {a['one_lead_worth']:.2f}); "
            f"{a['kept_with_their_owner']} of {a['leads_with_an_owner_among_the_bdrs']} leads "
            "with an owner among the BDRs kept with them",
            highlight=False,
        )
