"""What a study gives its users: every line printed about it (:mod:`._text`), the export of its best setting
(:mod:`._export`), rebuilding an exported setting (:mod:`._apply`) and the report (:mod:`._report`)."""

from typing import TYPE_CHECKING, Any

from ..studyfile._exports import read_export
from ._apply import apply_export, load_export
from ._export import export_document, write_export
from ._loop_setting import load_setting
from ._text import confirmed_lines, headline, summary_lines, timing_columns, timing_lines

if TYPE_CHECKING:
    from ._report import write_report


def __getattr__(name: str) -> Any:
    """The report's module is imported when first asked for: it imports matplotlib (half a second), which every
    other wemem command would pay."""
    if name == "write_report":
        from ._report import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "apply_export",
    "confirmed_lines",
    "export_document",
    "headline",
    "load_export",
    "load_setting",
    "read_export",
    "summary_lines",
    "timing_columns",
    "timing_lines",
    "write_export",
    "write_report",
]
