"""The peer side of ``benchmarks/packing.py``: one task mix through Parsl's pilot, on one SLURM node.

Runs on the cluster's login node, as the cluster's user, with the Python of a venv that has
``parsl`` (``benchmarks/packing.py --parsl-venv``; not airflow-desc's venv)::

    parsl-venv/bin/python parsl_packing.py --payload P --durations '[1.0, ...]' --run-dir D \\
        --partition regular --account desc --node pm-n1 --cores 2 --mem-mb 4096

Parsl's HighThroughputExecutor with a SlurmProvider: one block of one node (one worker per core),
asked for at start; every task is a ``python_app`` that runs the same payload command as our
bundles (``python3 payload.py --cpu-seconds S``) as a child and measures it with ``wait4``
(Parsl itself records no CPU). Once the last result is back, the DFK is cleaned up, which
scancels the block: the block's sacct Elapsed then counts its whole allocation.

Prints one line, ``parsl-packing: {json}``: the block's job ids and one entry per task (CPU,
start, end, exit status, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys


def main() -> int:
    import parsl
    from parsl.app.app import python_app
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers import SingleNodeLauncher
    from parsl.providers import SlurmProvider

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--payload", required=True)
    p.add_argument("--durations", required=True, help="JSON list of CPU seconds, one per task")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--partition", required=True)
    p.add_argument("--account", default=None)
    p.add_argument("--node", default=None)
    p.add_argument("--cores", type=int, required=True)
    p.add_argument("--mem-mb", type=int, required=True)
    p.add_argument("--python", default="python3")
    a = p.parse_args()
    durations = [float(s) for s in json.loads(a.durations)]
    payload = os.path.abspath(a.payload)  # the workers start elsewhere
    venv_bin = os.path.dirname(sys.executable)
    # Parsl starts its interchange (and the workers) as commands of the venv.
    os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    provider = SlurmProvider(
        partition=a.partition,
        account=a.account,
        nodes_per_block=1,
        cores_per_node=a.cores,
        mem_per_node=max(1, a.mem_mb // 1024),
        init_blocks=1,
        min_blocks=0,
        max_blocks=1,
        walltime="00:20:00",
        scheduler_options=f"#SBATCH --nodelist={a.node}" if a.node else "",
        # The workers' Python is the venv's: on this site the nodes see the login's file system.
        worker_init=f"export PATH={shlex.quote(venv_bin)}:$PATH",
        launcher=SingleNodeLauncher(),
        exclusive=True,
    )
    executor = HighThroughputExecutor(
        label="htex",
        provider=provider,
        address="127.0.0.1",
        cores_per_worker=1,
        max_workers_per_node=a.cores,
        heartbeat_period=5,
        poll_period=100,  # ms
    )
    parsl.load(Config(executors=[executor], run_dir=a.run_dir, strategy="none"))

    @python_app
    def burn(command: str) -> dict[str, float | int | None]:
        import os as _os
        import subprocess as _subprocess
        import time as _time

        start = _time.time()
        proc = _subprocess.Popen(["bash", "-c", command], stdout=_subprocess.DEVNULL)
        _, status, usage = _os.wait4(proc.pid, 0)
        proc.returncode = _os.waitstatus_to_exitcode(status)
        return {
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "start": start,
            "end": _time.time(),
            "exit": proc.returncode,
            "max_rss_bytes": usage.ru_maxrss * 1024,
        }

    futures = [
        burn(f"{shlex.quote(a.python)} {shlex.quote(payload)} --name t{i:03d} --cpu-seconds {s}")
        for i, s in enumerate(durations)
    ]
    tasks = [f.result() for f in futures]
    job_ids = [str(j) for j in provider.resources]
    parsl.dfk().cleanup()  # scancels the block: its allocation ends here
    print("parsl-packing: " + json.dumps({"job_ids": job_ids, "tasks": tasks}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
