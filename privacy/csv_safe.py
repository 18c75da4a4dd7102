"""CSV that a spreadsheet opens as data: the one writer for every CSV the platform hands to people or systems.

A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel, LibreOffice and Google
Sheets (`=HYPERLINK(...)` runs when opened). Such a cell is written with a single quote in front (OWASP's rule), which
the spreadsheet shows as text; a phone number like `+8613812875678` is therefore written `'+8613812875678`.
"""
import csv
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value) -> str:
    """The cell's text, with a single quote in front if a spreadsheet would read it as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _Line:
    """A file whose write returns what it was given, so a csv writer hands back each line as a string."""

    def write(self, value: str) -> str:
        return value


class SafeCsvWriter:
    """csv.writer with every cell passed through spreadsheet_safe; without a file, writerow returns the line (for a
    streaming response)."""

    def __init__(self, fh=None, **fmtparams):
        self._writer = csv.writer(fh if fh is not None else _Line(), **fmtparams)

    def writerow(self, row: Iterable):
        return self._writer.writerow([spreadsheet_safe(value) for value in row])

    def writerows(self, rows: Iterable[Iterable]) -> None:
        for row in rows:
            self.writerow(row)
