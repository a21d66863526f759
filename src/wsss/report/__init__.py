"""HTML reports of runs and their figures; the report takes values, never a run directory."""

from wsss.report.html import render_html, write_report
from wsss.report.inputs import (
    ExampleColumn,
    ExampleSet,
    ReportInputs,
    group_results,
    load_metrics_records,
    result_kind,
)

__all__ = [
    "ExampleColumn",
    "ExampleSet",
    "ReportInputs",
    "group_results",
    "load_metrics_records",
    "render_html",
    "result_kind",
    "write_report",
]
