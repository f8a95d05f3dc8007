"""Operators: SlurmOperator (one job), SlurmBundleOperator (many streams per allocation), the workflow operators."""
