"""Alembic migrations of the history store; run them with :meth:`HistoryStore.upgrade`."""
