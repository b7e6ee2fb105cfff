"""What the wheel ships: the package with py.typed, the LICENSE, the metadata (license, classifiers,
project URLs, the console script). Built here offline from a copy of the sources."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("sdist")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(out), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("lastwill-*.whl")
    with zipfile.ZipFile(path) as z:
        yield z


def metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


def test_wheel_ships_py_typed_and_the_package(wheel):
    names = wheel.namelist()
    assert "lastwill/py.typed" in names and wheel.read("lastwill/py.typed") == b""
    for module in ("lastwill/__init__.py", "lastwill/config.py", "lastwill/logs.py", "lastwill/core/will.py",
                   "lastwill/edge/server.py", "lastwill/storage/sqlite.py", "lastwill/testing/__init__.py",
                   "lastwill/testing/plugin.py"):
        assert module in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "contrib/"))]


def test_wheel_ships_the_license(wheel):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    text = wheel.read(name).decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert text == (REPO / "LICENSE").read_text()


def test_wheel_metadata(wheel):
    meta = metadata(wheel)
    assert meta["Name"] == "lastwill" and meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    classifiers = meta.get_all("Classifier")
    for c in ("Typing :: Typed", "Framework :: AsyncIO", "Programming Language :: Python :: 3.11",
              "Topic :: System :: Networking"):
        assert c in classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["MQTT 5.0 specification"].startswith("https://docs.oasis-open.org/mqtt/mqtt/v5.0/")
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[console_scripts]\nlastwill = lastwill.cli:main" in text
    assert "[pytest11]\nlastwill = lastwill.testing.plugin" in text  # the lastwill_broker fixtures
    assert "Framework :: Pytest" in classifiers


def test_wheel_ships_the_dashboard_as_written(wheel):
    """The admin listener's dashboard is plain files inside the package: nothing is built or fetched."""
    from pathlib import Path

    source = Path(__file__).resolve().parent.parent / "src" / "lastwill" / "edge" / "dashboard"
    for name in ("index.html", "app.js", "style.css"):
        assert wheel.read(f"lastwill/edge/dashboard/{name}") == (source / name).read_bytes()
