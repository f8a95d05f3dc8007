"""airflow-desc: run LSST DESC data-processing campaigns on SLURM clusters from Apache Airflow 3.

The public API is small on purpose; everything not re-exported here or from a
subpackage's ``__all__`` is private.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow (the ``apache_airflow_provider`` entry point)."""
    return {
        "package-name": "airflow-desc",
        "name": "LSST DESC",
        "description": "Run LSST DESC workflows on SLURM clusters reached over SSH.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "SLURM over SSH",
                "external-doc-url": "https://slurm.schedmd.com/",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {"integration-name": "SLURM over SSH", "python-modules": ["airflow_desc.hooks.slurm"]},
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_desc.hooks.slurm.SlurmHook",
                "connection-type": "desc_slurm",
            }
        ],
        "plugins": [{"name": "airflow_desc", "plugin-class": "airflow_desc.plugins.DescPlugin"}],
        "cli": ["airflow_desc.cli.airflow_cli_commands"],
    }
