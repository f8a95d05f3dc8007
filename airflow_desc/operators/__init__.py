"""Operators: SlurmOperator (one job), and later the bundle operator (many streams per allocation)."""
