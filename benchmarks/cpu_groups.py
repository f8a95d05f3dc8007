"""Where a benchmark's CPU goes on the local site: cpuacct cgroups of its parts, sampled every second.

The site's daemons run as plain processes (no systemd), and SLURM here uses the cpuset, memory and
freezer controllers, not cpuacct; so this module makes cpuacct groups of its own (under
``/sys/fs/cgroup/cpuacct/desc-bench``) and moves the daemons into them. A process's children are
born in its group, so each group counts everything its daemon starts, short-lived processes too:

* ``compute``: perlmutter's two slurmd, so every allocation (the quanta, our pilots, Parsl's worker
  pools, slurmstepd);
* ``login``: perlmutter's sshd, so what runs on its login node (Parsl's ``bps`` and interchange,
  our sbatch / sacct calls);
* ``airflow``: the calling process and what it starts later (Airflow's components and task
  processes, our ``bps``);
* ``db``: PostgreSQL (Airflow's metadata and the history).

The rest of the machine's busy time (slurmctld, slurmdbd, MariaDB, the kernel's threads) is
``other``. Needs root and cgroup v1's cpuacct hierarchy; without them :class:`CpuGroups` samples the
machine's busy time only (``/proc/stat``). The groups are emptied into the root group on
:meth:`CpuGroups.stop`; moving a process between cpuacct groups changes nothing but its accounting.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import threading
import time

ROOT = pathlib.Path("/sys/fs/cgroup/cpuacct")
BASE = ROOT / "desc-bench"
#: Each group and the processes (``pgrep -f`` patterns; ``self``: the caller) moved into it.
GROUPS: dict[str, tuple[str, ...]] = {
    "compute": ("slurmd -N pm-n",),
    "login": ("sshd-perlmutter.conf",),
    "airflow": ("self",),
    "db": ("postgres",),
}


def _busy_s() -> float:
    """The machine's busy CPU seconds since boot (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class CpuGroups:
    """Sample the machine's busy CPU and each group's, every second, in a thread, until :meth:`stop`."""

    def __init__(self) -> None:
        self.cpus = os.cpu_count() or 1
        self.groups = self._make_groups()
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _make_groups() -> list[str]:
        if os.geteuid() != 0 or not (ROOT / "cpuacct.usage").exists():
            return []
        made = []
        for name, patterns in GROUPS.items():
            group = BASE / name
            group.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                pids = [str(os.getpid())] if pattern == "self" else subprocess.run(
                    ["pgrep", "-f", pattern], capture_output=True, text=True, check=False
                ).stdout.split()  # fmt: skip
                for pid in pids:
                    try:
                        (group / "cgroup.procs").write_text(pid)
                    except OSError:
                        pass  # it ended meanwhile
            made.append(name)
        return made

    def split(self, parent: str, name: str, pids: list[int]) -> None:
        """Count ``pids`` (and what they start later) apart, as ``<parent>/<name>`` inside ``parent``."""
        if parent not in self.groups:
            return
        group = BASE / parent / name
        group.mkdir(exist_ok=True)
        for pid in pids:
            try:
                (group / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass
        self.groups.append(f"{parent}/{name}")

    def _sample(self) -> dict[str, float]:
        values = {"busy": _busy_s()}
        for name in self.groups:
            values[name] = int((BASE / name / "cpuacct.usage").read_text()) / 1e9
        return values

    def _run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.time(), self._sample()))
            self._done.wait(1.0)

    def stop(self) -> None:
        """Stop sampling; move the groups' processes back to the root group."""
        self._done.set()
        self._thread.join()
        self.samples.append((time.time(), self._sample()))
        for name in sorted(self.groups, key=lambda n: -n.count("/")):  # a subgroup before its parent
            for pid in (BASE / name / "cgroup.procs").read_text().split():
                try:
                    (ROOT / "cgroup.procs").write_text(pid)
                except OSError:
                    pass
            if "/" in name:
                (BASE / name).rmdir()

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU-s of the machine (``busy``), of each group and of ``other`` between two epoch times."""

        def at(t: float) -> dict[str, float]:
            before = [s for s in self.samples if s[0] <= t] or self.samples[:1]
            after = [s for s in self.samples if s[0] >= t] or self.samples[-1:]
            (t0, v0), (t1, v1) = before[-1], after[0]
            share = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
            # A subgroup made after a sample counted nothing before it.
            return {k: v0.get(k, 0.0) + (v1[k] - v0.get(k, 0.0)) * share for k in v1}

        a, b = at(start), at(end)
        spent = {k: b[k] - a.get(k, 0.0) for k in b}
        if self.groups:
            top = [name for name in self.groups if "/" not in name]
            spent["other"] = spent["busy"] - sum(spent[name] for name in top)
        return spent

    def describe(self, spent: dict[str, float]) -> str:
        """``compute 465, login 3, airflow 29 (scheduler 9, ...), db 7, other 11``."""
        parts = []
        for name in [n for n in self.groups if "/" not in n] + (["other"] if self.groups else []):
            subs = [f"{n.split('/', 1)[1]} {spent[n]:.0f}" for n in self.groups if n.startswith(name + "/")]
            parts.append(f"{name} {spent[name]:.0f}" + (f" ({', '.join(subs)})" if subs else ""))
        return ", ".join(parts)
