"""The one-way house: every module of the package sits on a floor of `.importlinter`'s layers.

`make lint` runs `lint-imports`, which fails on an upward import or a cycle between the floors;
that check only sees the modules the contract names, so this test fails when a new module (or
package) is added without a floor.
"""

from __future__ import annotations

import configparser
import os
import pathlib
import pkgutil
import subprocess
import sys

import airflow_desc

ROOT = pathlib.Path(__file__).parents[2]


def _contract(name: str, key: str) -> str:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    return config[f"importlinter:contract:{name}"][key]


def _floors(*, optional: bool = True) -> list[str]:
    text = _contract("floors", "layers")
    names: list[str] = []
    for line in text.splitlines():
        for part in line.replace("|", ":").split(":"):
            name = part.strip()
            if name.startswith("(") and not optional:  # an optional floor, "(name)", may not exist yet
                continue
            name = name.strip("()")
            if name:
                names.append(f"airflow_desc.{name}")
    return names


def _modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(airflow_desc.__path__, "airflow_desc.")
        if ".migrations" not in info.name
    ]


def test_every_module_has_a_floor() -> None:
    floors = _floors()
    # A package whose modules sit on different floors is itself on none: its __init__ only
    # gathers names (workflow: spec and graph, registry and render).
    packages = {name.rpartition(".")[0] for name in floors} - {"airflow_desc"}
    missing = [
        m
        for m in _modules()
        if m not in packages and not any(m == f or m.startswith(f + ".") for f in floors)
    ]
    assert not missing, f"modules without a floor in .importlinter: {missing}"


def test_the_floors_name_existing_modules() -> None:
    known = set(_modules())
    absent = [f for f in _floors(optional=False) if f not in known]
    assert not absent, f".importlinter names modules that do not exist: {absent}"


def test_the_airflow_free_modules_load_no_airflow() -> None:
    """What the import contract says, checked at run time in a fresh interpreter."""
    modules = _contract("airflow-free", "source_modules").split()
    code = (
        f"import sys; import {', '.join(modules)}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"
