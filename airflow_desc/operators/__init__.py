"""Operators: SlurmOperator (one job), SlurmBundleOperator (a bundle), the workflow operators."""
