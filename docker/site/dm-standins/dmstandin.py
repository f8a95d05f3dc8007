#!/usr/bin/env python3
"""Stand-ins for the LSST DM command-line tasks that DC1's and Twinkles' specs call (``dm_command``).

One stdlib-only program, installed under each DM name (``processEimage.py``, ``makeCoaddTempExp.py``
...; ``install`` beside it). Run under a name, it parses the arguments that DM command-line task
takes, with DM's option names (``REPO --rerun R --id k=v ... --selectId ... --templateId ...
-C/--configfile FILE --cores N --mode link ...``), refuses a data ID key that task does not know,
checks that its inputs exist (the ingested repository, the config file, what the upstream task wrote),
burns a little CPU, and writes its outputs where the specs' emulated payloads write them
(``<repo>/rerun/<rerun>/calexp/v<visit>/<raft>/calexp_<sensor>.fits`` ...), so the specs' output
checks hold in both payloads. So an argument mistake in a spec fails: a bad option or data ID key
exits 2 with argparse's ``<name>: error: ...`` line (as DM's argument parser does), a missing input
raises ``FileNotFoundError`` (exit 1, a Python traceback). Not DM: no pixels, no butler.

``DM_STANDIN_CPU_SECONDS`` (default 0.3) sets the CPU each run burns.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from dataclasses import dataclass

_CALEXP = ("calexp", "v{visit}", "{raft}", "calexp_{sensor}.fits")
_COADD_DIR = ("deepCoadd", "{filter}", "{tract}", "{patch}")
_RESULTS_DIR = ("deepCoadd-results", "{filter}", "{tract}", "{patch}")


@dataclass(frozen=True)
class Tool:
    """One DM command-line task: what it takes, reads and writes.

    :param ids: the data ID keys of ``--id`` (empty: the task takes no ``--id``).
    :param select_ids: those of ``--selectId`` (empty: no ``--selectId``).
    :param template_ids: those of ``--templateId``.
    :param inputs: files it reads, below the rerun's output unless they start with ``@repo``.
    :param outputs: files it writes, below the rerun's output unless they start with ``@repo``.
    :param positional: what follows the repository: ``files`` (ingest: raw files), ``catalog``, none.
    :param repo_option: the repository is ``--repo R`` rather than the first argument.
    :param makes_repo: it creates the repository (ingest); the others need it ingested.
    :param rerun: it takes ``--rerun`` (writes below ``<repo>/rerun/<rerun>``).
    """

    ids: tuple[str, ...] = ()
    select_ids: tuple[str, ...] = ()
    template_ids: tuple[str, ...] = ()
    inputs: tuple[tuple[str, ...], ...] = ()
    outputs: tuple[tuple[str, ...], ...] = ()
    positional: str = ""
    repo_option: bool = False
    makes_repo: bool = False
    rerun: bool = True


_REGISTRY = ("@repo", "registry.sqlite3")
_SENSOR_IDS = ("visit", "raft", "sensor", "year", "filter")
_PATCH_IDS = ("filter", "tract", "patch", "year")

TOOLS: dict[str, Tool] = {
    "ingestDriver.py": Tool(positional="files", makes_repo=True, rerun=False, outputs=(_REGISTRY,)),
    "ingestImages.py": Tool(
        ids=("year",), positional="files", makes_repo=True, rerun=False,
        outputs=(_REGISTRY, ("@repo", "ingest", "year{year}.done")),
    ),
    "ingestReferenceCatalog.py": Tool(
        positional="catalog", rerun=False, inputs=(_REGISTRY,),
        outputs=(("@repo", "ref_cats", "dc1", "master_schema.fits"),),
    ),
    "makeDiscreteSkyMap.py": Tool(
        ids=("filter", "visit", "year"), inputs=(_REGISTRY,), outputs=(("deepCoadd", "skyMap.pickle"),)
    ),
    "processEimage.py": Tool(
        ids=_SENSOR_IDS, inputs=(_REGISTRY,),
        outputs=(_CALEXP, ("src", "v{visit}", "{raft}", "src_{sensor}.fits")),
    ),
    "makeCoaddTempExp.py": Tool(
        ids=_PATCH_IDS, select_ids=("filter", "visit", "year"), inputs=(_REGISTRY,),
        outputs=((*_COADD_DIR, "tempExp.fits"),),
    ),
    "assembleCoadd.py": Tool(
        ids=_PATCH_IDS, select_ids=("filter", "visit", "year"),
        inputs=((*_COADD_DIR, "tempExp.fits"),),
        outputs=(("deepCoadd", "{filter}", "{tract}", "{patch}.fits"),),
    ),
    "detectCoaddSources.py": Tool(
        ids=_PATCH_IDS, inputs=(("deepCoadd", "{filter}", "{tract}", "{patch}.fits"),),
        outputs=((*_RESULTS_DIR, "det.fits"),),
    ),
    "mergeCoaddDetections.py": Tool(
        ids=_PATCH_IDS, inputs=(_REGISTRY,),
        outputs=(("deepCoadd-results", "merged", "{tract}", "{patch}", "mergeDet.fits"),),
    ),
    "measureCoaddSources.py": Tool(
        ids=_PATCH_IDS, inputs=((*_RESULTS_DIR, "det.fits"),), outputs=((*_RESULTS_DIR, "meas.fits"),)
    ),
    "mergeCoaddMeasurements.py": Tool(
        ids=_PATCH_IDS, inputs=(_REGISTRY,),
        outputs=(("deepCoadd-results", "merged", "{tract}", "{patch}", "ref.fits"),),
    ),
    "imageDifference.py": Tool(
        ids=_SENSOR_IDS, template_ids=("filter", "tract", "patch"), inputs=(_CALEXP,),
        outputs=(("deepDiff", "v{visit}", "{raft}", "diaSrc_{sensor}.fits"),),
    ),
    "forcedPhotCcd.py": Tool(
        ids=(*_SENSOR_IDS, "tract"), inputs=(_REGISTRY,),
        outputs=(("forced_src", "v{visit}", "{raft}", "forced_{sensor}.fits|forced.fits"),),
    ),
    "diaObjectMaker": Tool(
        ids=("year",), repo_option=True, inputs=(_REGISTRY,),
        outputs=(("diaObject", "diaObject-{tract}.fits"),),
    ),
    "desc_dc1_wrapup.py": Tool(inputs=(_REGISTRY,), outputs=(("wrapup.done",),)),
    "desc_twinkles_wrapup.py": Tool(
        ids=("year",), inputs=(_REGISTRY,), outputs=(("wrapup-year{year}.done",),)
    ),
}  # fmt: skip


def _data_id(
    parser: argparse.ArgumentParser, option: str, words: list[str], keys: tuple[str, ...]
) -> dict[str, str]:
    """Read ``k=v`` words as DM does (``filter=u^g`` is two values); refuse a key the task lacks."""
    found: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key or not value:
            parser.error(f"argument {option}: {word!r} is not of the form key=value")
        if key not in keys:
            parser.error(f"argument {option}: unknown data ID key {key!r}; this task takes {', '.join(keys)}")
        found[key] = value
    return found


def _parser(name: str, tool: Tool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=name, description=f"{name}: a stand-in for the DM task")
    if tool.repo_option:
        parser.add_argument("--repo", required=True, help="the data repository")
    else:
        parser.add_argument("repo", help="the data repository")
    if tool.positional == "files":
        parser.add_argument("files", nargs="+", help="raw files to ingest")
        parser.add_argument("--mode", choices=("move", "copy", "link", "skip"), default="link")
        parser.add_argument("--cores", type=int, default=1)
    elif tool.positional == "catalog":
        parser.add_argument("catalog", help="the reference catalog")
    if tool.rerun:
        parser.add_argument("--rerun", required=True, help="the output rerun (below <repo>/rerun/)")
    if tool.repo_option:
        parser.add_argument("--tract", type=int, required=True)
    if tool.ids:
        parser.add_argument("--id", nargs="+", default=[], metavar="KEY=VALUE")
    if tool.select_ids:
        parser.add_argument("--selectId", nargs="+", default=[], metavar="KEY=VALUE")
    if tool.template_ids:
        parser.add_argument("--templateId", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("-C", "--configfile", action="append", default=[], help="config override file")
    parser.add_argument("-j", "--processes", type=int, default=1)
    parser.add_argument("--clobber-config", action="store_true")
    parser.add_argument("--no-versions", action="store_true")
    parser.add_argument("--doraise", action="store_true")
    return parser


def _path(repo: str, out: str, parts: tuple[str, ...], ids: dict[str, str]) -> str:
    """Fill a file's parts: the first of ``a|b`` that fills; a part naming absent keys is left out.

    So is one whose key has several values (``filter=u^g``): Twinkles' paths lack DC1's rafts, its
    coadds the filter.
    """
    base, rest = (repo, parts[1:]) if parts[0] == "@repo" else (out, parts)
    kept = []
    for part in rest:
        for choice in part.split("|"):
            try:
                filled = choice.format(**ids)
            except KeyError:
                continue
            if "^" not in filled:
                kept.append(filled)
                break
    return os.path.join(base, *kept)


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x = (x * 31 + 7) % 1000003


def _read_ids(parser: argparse.ArgumentParser, tool: Tool, args: argparse.Namespace) -> dict[str, str]:
    """Return the run's data ID: ``--id``'s, then ``--templateId``'s for keys ``--id`` lacks."""
    ids = _data_id(parser, "--id", getattr(args, "id", None) or [], tool.ids)
    _data_id(parser, "--selectId", getattr(args, "selectId", None) or [], tool.select_ids)
    template = _data_id(parser, "--templateId", getattr(args, "templateId", None) or [], tool.template_ids)
    ids.update({k: v for k, v in template.items() if k not in ids})
    if tool.repo_option:
        ids["tract"] = str(args.tract)
    for config in args.configfile:
        if not os.path.isfile(config):
            parser.error(f"argument -C/--configfile: cannot read config file {config!r}: no such file")
    return ids


def _missing(path: str, why: str = "No such file or directory") -> FileNotFoundError:
    return FileNotFoundError(2, why, path)


def _check_inputs(tool: Tool, args: argparse.Namespace, repo: str, out: str, ids: dict[str, str]) -> None:
    """Raise ``FileNotFoundError`` for the first input that is not there (an ingest makes the repository)."""
    mapper = os.path.join(repo, "_mapper")
    if tool.makes_repo:
        missing = [f for f in args.files if not glob.glob(f)]
        if missing:
            raise _missing(missing[0])
        os.makedirs(repo, exist_ok=True)
        with open(mapper, "w") as f:
            f.write("lsst.obs.lsstSim.LsstSimMapper\n")
    elif not os.path.isfile(mapper):
        raise _missing(mapper, "No such file or directory (no data repository: ingest first)")
    if tool.positional == "catalog" and not os.path.isfile(args.catalog):
        raise _missing(args.catalog)
    for parts in tool.inputs:
        path = _path(repo, out, parts, ids)
        if not os.path.exists(path):
            raise _missing(path)


def main(argv: list[str] | None = None, name: str | None = None) -> int:
    """Run the stand-in called ``name`` (default: how it was invoked) with ``argv``."""
    name = name or os.path.basename(sys.argv[0])
    if argv is None and sys.argv[1:] == ["--list"]:  # what install links, one name a line
        print("\n".join(TOOLS))
        return 0
    tool = TOOLS.get(name)
    if tool is None:
        print(f"dmstandin: no DM task named {name!r}; known: {', '.join(sorted(TOOLS))}", file=sys.stderr)
        return 2
    parser = _parser(name, tool)
    args = parser.parse_args(argv)
    ids = _read_ids(parser, tool, args)
    repo = args.repo
    out = os.path.join(repo, "rerun", args.rerun) if tool.rerun else repo
    print(f"{name}: repo {repo}, data ID {ids or '{}'}", flush=True)
    _check_inputs(tool, args, repo, out, ids)
    _burn(float(os.environ.get("DM_STANDIN_CPU_SECONDS", "0.3")))
    for parts in tool.outputs:
        path = _path(repo, out, parts, ids)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "a") as f:
            f.write(f"{name} {' '.join(sys.argv[1:] if argv is None else argv)}\n")
        print(f"{name}: wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
