"""What the butler holds of a BPS run, for ``benchmarks/bps_peer.py``: run by the LSST venv's python.

    bps_quanta.py REPO RUN_COLLECTION

Prints one JSON line: ``datasets``, the number of datasets of each type in the collection (as
``butler query-datasets`` counts them), and ``quanta``, one entry per quantum that wrote its
``<label>_metadata``: label, detector, start and end (``quantum.startUtc`` / ``endUtc``), the
process's CPU seconds when the quantum ended (``quantum.endCpuTime``: pipetask's own
``getrusage``, startup included, the same measure for any WMS) and its peak RSS in bytes.
"""

from __future__ import annotations

import json
import sys

from lsst.daf.butler import Butler


def main() -> int:
    repo, run = sys.argv[1], sys.argv[2]
    butler = Butler.from_config(repo, collections=run, writeable=False)
    counts: dict[str, int] = {}
    quanta = []
    for dataset_type in butler.registry.queryDatasetTypes():
        refs = list(butler.registry.queryDatasets(dataset_type, collections=run))
        counts[dataset_type.name] = len(refs)
        if not dataset_type.name.endswith("_metadata"):
            continue
        for ref in refs:
            quantum = butler.get(ref)["quantum"]
            quanta.append(
                {
                    "label": dataset_type.name.removesuffix("_metadata"),
                    "detector": int(ref.dataId["detector"]),
                    "start": quantum["startUtc"],
                    "end": quantum["endUtc"],
                    "cpu_s": float(quantum["endCpuTime"]),
                    "max_rss_bytes": int(quantum["endMaxResidentSetSize"]),
                }
            )
    print(json.dumps({"datasets": counts, "quanta": quanta}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
