#!/usr/bin/env python3
"""Write the root file system of the site's payload image as a tar file, from this machine's own files.

    rootfs.py OUT.tar

No registry is reachable from the site, so the image is made here: bash, a few coreutils and this
machine's python3 with its standard library, each with the shared libraries ``ldd`` says it needs
(so is every extension module of the standard library), laid out as Debian's merged /usr is (/bin,
/lib and /lib64 link into /usr). Its own /etc/os-release and /etc/desc-payload-image tell a payload
that it runs in the image, not on the node. Every entry is owned by root (uid 0 in the image, which
rootless podman maps to the user who runs it). Standard library only; run by ./build with the
python3 the image is to hold.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import sysconfig
import tarfile

#: What payloads and job scripts run: the shell, the emulated payload's python3, and small tools.
PROGRAMS = (
    "bash", "sh", "env", "cat", "ls", "mkdir", "rm", "cp", "mv", "touch", "sleep", "head", "tail", "wc",
    "date", "id", "true", "false", "dd", "sort", "uname", "hostname", "stat", "find", "grep", "sed",
)  # fmt: skip
#: The standard library minus what no payload needs (and its compiled caches, made again on import).
SKIP_DIRS = {"__pycache__", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages",
             "dist-packages", "config-3.11-x86_64-linux-gnu"}  # fmt: skip
MARKER = "desc-payload test image: bash and python3 copied from the site's host, no registry\n"
OS_RELEASE = 'NAME="DESC payload"\nID=desc-payload\nPRETTY_NAME="DESC payload test image"\nVERSION_ID=1\n'
ETC = {
    "etc/os-release": OS_RELEASE,
    "etc/desc-payload-image": MARKER,
    "etc/passwd": "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "desc-payload\n",
}
_LDD_RE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


class Rootfs:
    def __init__(self, out: tarfile.TarFile) -> None:
        self.out = out
        self.done: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode, info.uid, info.gid, info.uname, info.gname = kind, mode, 0, 0, "root", "root"
        return info

    def directory(self, path: str, mode: int = 0o755) -> None:
        path = path.rstrip("/")
        if not path or path in self.done:
            return
        self.directory(os.path.dirname(path))
        self.done.add(path)
        self.out.addfile(self._info(path, tarfile.DIRTYPE, mode))

    def text(self, path: str, content: str, mode: int = 0o644) -> None:
        self.directory(os.path.dirname("/" + path))
        info = self._info(path, tarfile.REGTYPE, mode)
        data = content.encode()
        info.size = len(data)
        self.out.addfile(info, io.BytesIO(data))

    def symlink(self, path: str, target: str) -> None:
        if path in self.done:
            return
        self.directory(os.path.dirname(path))
        self.done.add(path)
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.out.addfile(info)

    def file(self, path: str) -> None:
        """Add a host file at its own path (its directory resolved: /lib is /usr/lib), links followed."""
        path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        if path in self.done:
            return
        if os.path.islink(path):
            target = os.readlink(path)
            self.symlink(path, target)
            self.file(os.path.join(os.path.dirname(path), target))
            return
        self.directory(os.path.dirname(path))
        self.done.add(path)
        info = self.out.gettarinfo(path, arcname=path.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        with open(path, "rb") as f:
            self.out.addfile(info, f)

    def binary(self, path: str) -> None:
        """Add a program or shared object with every library it loads."""
        self.file(path)
        found = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
        for lib in _LDD_RE.findall(found):
            self.file(lib)


def which(name: str) -> str:
    for d in ("/usr/bin", "/bin", "/usr/sbin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    raise SystemExit(f"rootfs.py: {name} not found in /usr/bin or /bin; install it or drop it from PROGRAMS")


def main(out_path: str) -> None:
    stdlib = sysconfig.get_paths()["stdlib"]  # /usr/lib/python3.11
    python = os.path.realpath(sys.executable)  # run by the python3 the image is to hold
    with tarfile.open(out_path, "w", format=tarfile.GNU_FORMAT) as out:
        fs = Rootfs(out)
        for link, target in (
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ):
            fs.directory("/" + target)
            fs.symlink("/" + link, target)
        for d, mode in (("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/root", 0o700), ("/proc", 0o555),
                        ("/sys", 0o555), ("/dev", 0o755), ("/home", 0o755), ("/run", 0o755)):  # fmt: skip
            fs.directory(d, mode)
        for name, content in ETC.items():
            fs.text(name, content)
        if os.path.exists("/etc/ld.so.cache"):
            fs.file("/etc/ld.so.cache")  # where the loader finds the libraries (they keep their paths)
        for name in PROGRAMS:
            fs.binary(which(name))
        fs.binary(python)
        fs.symlink("/usr/bin/python3", os.path.basename(python))
        for root, dirs, files in os.walk(stdlib):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            for name in sorted(files):
                path = os.path.join(root, name)
                (fs.binary if name.endswith(".so") else fs.file)(path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: rootfs.py OUT.tar")
    main(sys.argv[1])
