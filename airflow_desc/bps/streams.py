"""The script process of a BPS submission's DAG: it returns the quanta of each label as streams.

Runs on the Airflow worker (``callable: airflow_desc.bps.streams:quanta_by_label`` in the spec
:mod:`airflow_desc.bps.translate` writes); the quanta are in its kwargs, written at ``bps prepare``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["quanta_by_label"]


def quanta_by_label(quanta: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Return the streams of each label's sub-task: ``{label: ["<data id>@<node ids>", ...]}``.

    :param quanta: the same, as the spec's kwargs hold it.
    """
    return {label: [str(stream) for stream in streams] for label, streams in quanta.items()}
