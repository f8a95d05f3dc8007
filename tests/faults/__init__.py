"""The fault matrix (``make test-faults``): faults injected for real on the local site, then checked.

:mod:`tests.faults.check` compares (pure, unit-tested in tests/unit/test_fault_check.py);
:mod:`tests.faults.faults` injects; :mod:`tests.faults.deployment` is the Airflow the workflow runs
on; :mod:`tests.faults.site` stops and starts the site's services; ``python -m tests.faults`` runs it.
"""
