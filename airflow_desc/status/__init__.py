"""The status of a campaign: the history's counts, the live states of runs in progress, their merge.

Floor 4 of the layers (``DESIGN.md``): it reads the history (:mod:`airflow_desc.history`),
Airflow's metadata DB and the clusters, and knows the operators, triggers and generated DAGs
that the history, a leaf, must not.

- :mod:`~airflow_desc.status.live`: the process instances of queued and running DAG runs, from
  task-instance states and ``sacct``;
- :mod:`~airflow_desc.status.merge`: :func:`~airflow_desc.status.merge.merge_live`, which state
  counts where once a record exists;
- :mod:`~airflow_desc.status.current`: :func:`~airflow_desc.status.current.current_counts`, what
  ``airflow-desc status`` / ``report`` and the UI page show.
"""
