"""airflow_desc.bps runs in the LSST environment: it loads neither Airflow nor the rest of airflow_desc.

The distribution airflow-desc-bps (bps/pyproject.toml) ships only airflow_desc.bps and
airflow_desc.exceptions, so nothing else of the package may be imported. ``service`` imports
lsst.ctrl.bps, which this venv lacks: tests/integration/test_bps_prepare.py loads it in the LSST venv.
"""

from __future__ import annotations

import os
import subprocess
import sys

MODULES = tuple(
    f"airflow_desc.bps{m}"
    for m in ("", ".api", ".jobs", ".commands", ".translate", ".states", ".streams", ".runs")
)


def test_the_plugin_loads_no_airflow_and_only_what_its_distribution_ships() -> None:
    code = (
        f"import sys; import {', '.join(MODULES)}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'airflow_desc', 'lsst')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)

    loaded = eval(done.stdout)  # a printed list of names
    assert not [m for m in loaded if m.split(".")[0] in ("airflow", "lsst")]
    assert set(loaded) <= {"airflow_desc", "airflow_desc.exceptions", *MODULES}
