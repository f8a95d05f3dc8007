"""``python -m airflow_desc.cli``: the ``airflow-desc`` command."""

from __future__ import annotations

import sys

from airflow_desc.cli.main import main

sys.exit(main())
