"""The ``airflow-desc`` command: operator tools for DESC campaigns.

Commands::

    airflow-desc clusters list             the cluster profiles in use
    airflow-desc clusters check [NAME ...] log in to each cluster and check SLURM answers as profiled,
                                           and the login's key (certificate) is not about to expire
    airflow-desc pools sync                one Airflow pool per cluster, sized by its max_queued_jobs
                                           (generated batch and bundle tasks run in them)
    airflow-desc status                    the DC1-style status table (--format table|csv|json): the
                                           history merged with the live states of runs in progress
    airflow-desc report --out DIR          HTML report: status table, seaborn figures, resource advice
    airflow-desc advice [--write FILE --extends SPEC]
                                           memory and walltime per process from the history's
                                           percentiles; --write: as a render overlay
    airflow-desc history [filters]         process instances (--process, --state, --reason, --stream ...)
    airflow-desc history flush             write the records spooled while the history DB was down
    airflow-desc rerun --reason WHY [filters]  clear the task instances of the selected process
                                           instances (and what is downstream) through Airflow's
                                           REST API, as the API connection's user
    airflow-desc logs PROCESS [--stream G]  the log tails the history keeps of a process's instances
                                           (--try N, --run R); --full reads whole logs over SSH

``status``, ``report``, ``history`` and ``rerun`` select by ``--workflow`` (the spec's name),
``--version`` (its top-level version: two versions may run side by side) and ``--variant``.

Every command has ``--help``, and is also ``airflow desc <command>`` (:func:`airflow_cli_commands`,
listed under ``cli`` in the provider info).

Modules: :mod:`~airflow_desc.cli.parser` (the commands and their arguments),
:mod:`~airflow_desc.cli.main` (running one), :mod:`~airflow_desc.cli.selection` (what the history
commands read), :mod:`~airflow_desc.cli.history_commands` (``status``, ``report``, ``history``,
``logs``), :mod:`~airflow_desc.cli.advice`, :mod:`~airflow_desc.cli.rerun`,
:mod:`~airflow_desc.cli.clusters` (``clusters``, ``pools``) and
:mod:`~airflow_desc.cli.airflow_commands` (``airflow desc``).
"""

from __future__ import annotations

from airflow_desc.cli.airflow_commands import airflow_cli_commands
from airflow_desc.cli.main import main
from airflow_desc.cli.parser import build_parser

__all__ = ["airflow_cli_commands", "build_parser", "main"]
