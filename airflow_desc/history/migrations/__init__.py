"""Alembic migrations of the history store; run them with :meth:`HistoryStore.upgrade`."""

#: The newest revision (the chain's head; `tests/unit/history/test_store.py` checks it against the scripts).
HEAD_REVISION = "0010"
