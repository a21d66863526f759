"""HTML reports of runs and their figures."""

from wsss.report.html import render_html, write_report

__all__ = ["render_html", "write_report"]
