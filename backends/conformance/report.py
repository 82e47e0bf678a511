"""Human-readable rendering of a conformance :class:`~.runner.Report` (rich table + summary)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .cases import describe_line
from .runner import Report

_STYLE = {"pass": "green", "fail": "bold red", "xfail": "yellow", "skip": "dim"}


def _ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return "inf" if not math.isfinite(r) else f"{r:.3g}"


def render(report: Report, console: Console) -> None:
    b = report.backend
    console.print(f"[bold]vdm conformance[/bold]  spec {report.spec_version}  backend {b['name']} "
                  f"({b['version']})  device {b['device']}  dtype {b['dtype']}")
    table = Table(show_lines=False, header_style="bold")
    table.add_column("clause", justify="right")
    table.add_column("op", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("worst err/tol", justify="right", no_wrap=True)
    table.add_column("cases", justify="right")
    table.add_column("detail", overflow="fold")
    for r in report.results:
        detail = ""
        if r.status in ("fail", "xfail") and r.first_failure:
            ff = r.first_failure
            detail = f"{ff['case']}: {ff['message']}"
            if r.status == "xfail":
                detail = f"expected: {r.reason} | {detail}"
            elif r.n_failed > 1:
                detail += f" (+{r.n_failed - 1} more)"
            if r.status == "fail" and ff.get("inputs"):
                detail += f"\ninputs: {describe_line(ff['inputs'])}"
            if r.status == "fail" and ff.get("reproduce"):
                detail += f"\nreproduce: {ff['reproduce']}"
        elif r.status == "skip":
            detail = r.reason or ""
        table.add_row(r.clause, r.op, Text(r.status, style=_STYLE[r.status]), _ratio(r.worst_ratio),
                      str(r.n_cases), detail)
    console.print(table)
    for r in report.results:  # unwrapped, so the command can be copied as one line
        if r.status == "fail" and r.first_failure and r.first_failure.get("reproduce"):
            console.print(f"reproduce {r.op}: {r.first_failure['reproduce']}", soft_wrap=True, markup=False)
    for e in report.unmatched_xfail:
        console.print(f"[yellow]warning:[/yellow] unmatched xfail entry {e.target}: {e.reason} "
                      "(no failing check matched it; remove it if the clause passes now)")
    counts = ", ".join(f"{report.count(s)} {word}" for s, word in
                       (("pass", "passed"), ("fail", "failed"), ("xfail", "xfailed"), ("skip", "skipped")))
    verdict = "[green]conformant[/green]" if report.ok else "[bold red]NOT conformant[/bold red]"
    if report.ok and report.count("skip"):
        verdict = "[yellow]conformant on the clauses checked[/yellow]"
    console.print(f"{counts} in {report.duration_s:.1f}s: {verdict}")
