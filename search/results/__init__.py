"""What a study gives its users: every line printed about it (:mod:`.text`), the export of its best setting
(:mod:`.export`), rebuilding an exported setting (:mod:`.apply`) and the report (:mod:`.report`)."""

from ..studyfile.exports import read_export
from .apply import apply_export, load_export
from .export import export_document, write_export
from .report import write_report
from .text import confirmed_lines, headline, summary_lines, timing_columns, timing_lines

__all__ = ["apply_export", "confirmed_lines", "export_document", "headline", "load_export", "read_export",
           "summary_lines", "timing_columns", "timing_lines", "write_export", "write_report"]
