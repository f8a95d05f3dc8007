"""The real outputs recorded from the local SLURM site (``tests/data/site``, made by its record.sh).

Each ``sacct`` file is read with the field list it was recorded with: ``$FIELDS`` of record.sh
for the ``sacct -n`` files, the header line for the files recorded without ``-n``, and the ``-o``
list of a comment at the top (``sacct-placeholder-allocation.txt``).
"""

from __future__ import annotations

import pathlib
import re

from airflow_desc.slurm import JobAccounting, group_accounting, parse_sacct

__all__ = ["RECORD_FIELDS", "SITE", "sacct_text", "site_jobs"]

SITE = pathlib.Path(__file__).resolve().parent / "data" / "site"
_FIELDS = re.search(r"^FIELDS=(\S+)$", (SITE / "record.sh").read_text(), re.MULTILINE)
assert _FIELDS is not None, "record.sh sets FIELDS"
#: record.sh's ``$FIELDS``: the field list of the site's ``sacct -n`` recordings.
RECORD_FIELDS = tuple(_FIELDS.group(1).split(","))


def sacct_text(name: str) -> tuple[tuple[str, ...], str]:
    """Return the field list a recording was made with and its data lines (comments and header removed)."""
    lines = (SITE / name).read_text().splitlines()
    fields = RECORD_FIELDS
    for comment in (line for line in lines if line.startswith("#")):
        found = re.search(r" -o (\S+)", comment)
        if found:
            fields = tuple(found.group(1).split(","))
    data = [line for line in lines if line.strip() and not line.startswith("#")]
    if data and data[0].startswith("JobID|"):
        fields = tuple(data.pop(0).split("|"))
    return fields, "\n".join(data) + "\n"


def site_jobs(name: str) -> dict[str, JobAccounting]:
    """The jobs of a site recording, parsed with its own field list."""
    fields, text = sacct_text(name)
    return group_accounting(parse_sacct(text, fields))
