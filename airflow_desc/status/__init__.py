"""The status of a campaign: the history's counts, the live states of runs in progress, their merge.

Floor 4 of the layers (``DESIGN.md``): it reads the history (:mod:`airflow_desc.history`) and
Airflow's metadata DB, databases only: the status page's api-server needs no DAG files and no
SSH (``.importlinter``'s third contract keeps hooks, triggers, operators and the workflow
registry out of what the page imports).

- :mod:`~airflow_desc.status.plans`: a DAG's process plan (which process instances its task
  instances stand for, its workflow's order) and its JSON, as the history stores it;
- :mod:`~airflow_desc.status.dag_plans`: the plan of a loaded DAG, made where it is loaded (the
  plugin's listener, in the worker), from its workflow graph or its operators;
- :mod:`~airflow_desc.status.live`: the process instances of queued and running DAG runs, from
  task-instance states, the stored plans and the SLURM job states the triggers' pollers store;
- :mod:`~airflow_desc.status.merge`: :func:`~airflow_desc.status.merge.merge_live`, which state
  counts where once a record exists;
- :mod:`~airflow_desc.status.current`: :func:`~airflow_desc.status.current.current_counts`, what
  ``airflow-desc status`` / ``report`` and the UI page show;
- :mod:`~airflow_desc.status.merge_rows` and :mod:`~airflow_desc.status.current_rows`: the same
  merge over plain rows, every database read through the DBAPI: ``airflow-desc status`` without
  pandas or SQLAlchemy.
"""
