import pathlib

#: Hand-written SLURM outputs shaped like the local site's (tests/data/slurm/README.md).
DATA = pathlib.Path(__file__).parents[2] / "data" / "slurm"
