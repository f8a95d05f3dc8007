"""The ctrl_bps_parsl site of ``benchmarks/bps_peer.py``: the local perlmutter, one block of both nodes.

ctrl_bps_parsl's stock ``lsst.ctrl.bps.parsl.sites.Slurm`` asks for a block of ``nodes`` nodes but starts
one worker pool (Parsl's default SingleNodeLauncher), and finds its driver by host name; like the
sites DESC writes for NERSC (``sites/nersc.py``) this one passes the provider what the cluster needs:
the partition, an ``srun`` launcher (one worker pool per node), the workers' PATH (the LSST venv,
which every node sees), and the driver's address (the login and the nodes share 127.0.0.1 here).

It also makes the Parsl config itself: ctrl_bps_parsl 30.2026.300's ``SiteConfig.get_parsl_config``
passes ``checkpoint_mode`` to ``parsl.config.Config``, which parsl 2026.10.26 (the pinned one) no
longer takes (it moved to the memoizer); the same settings go to a ``BasicMemoizer`` here, which
on a restart loads every checkpoint of the run directory (``bps restart`` then skips what succeeded).
The BPS config names it as ``site.<computeSite>.class``, with ``nodes``, ``cores_per_node``,
``walltime``, ``account`` and ``partition``.
"""

from __future__ import annotations

import os
import shlex
import sys

import parsl.config
from lsst.ctrl.bps.parsl.configuration import get_bps_config_value
from lsst.ctrl.bps.parsl.sites import Slurm
from parsl.dataflow.memoization import BasicMemoizer
from parsl.executors.base import ParslExecutor
from parsl.launchers import SrunLauncher

__all__ = ["LocalSlurm"]


class LocalSlurm(Slurm):
    """A block of ``nodes`` whole nodes of the local cluster, one worker per core."""

    def get_address(self) -> str:
        return "127.0.0.1"

    def get_executors(self) -> list[ParslExecutor]:
        cores = get_bps_config_value(self.site, "cores_per_node", int, required=True)
        venv_bin = os.path.dirname(sys.executable)
        provider_options = {
            "partition": get_bps_config_value(self.site, "partition", str, required=True),
            "launcher": SrunLauncher(),
            "init_blocks": 1,
            "min_blocks": 0,
            "max_blocks": 1,
            "exclusive": True,
            "worker_init": f"export PATH={shlex.quote(venv_bin)}:$PATH",
        }
        executor_options = {"cores_per_worker": 1, "max_workers_per_node": cores, "heartbeat_period": 5}
        return [
            self.make_executor("slurm", provider_options=provider_options, executor_options=executor_options)
        ]

    def get_parsl_config(self) -> parsl.config.Config:
        return parsl.config.Config(
            executors=self.get_executors(),
            monitoring=self.get_monitor(),
            retries=get_bps_config_value(self.site, "retries", int, 1),
            run_dir=get_bps_config_value(self.site, "run_dir", str, "runinfo"),
            memoizer=BasicMemoizer(checkpoint_mode="task_exit"),
        )
