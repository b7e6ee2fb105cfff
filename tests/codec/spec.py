"""Access to the OASIS spec texts as JSON, when present on this machine (tests skip otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SPEC_DIR = Path("/tmp/specdata")


def load(version: str) -> dict:
    path = SPEC_DIR / f"mqtt-v{version}.json"
    if not path.exists():
        pytest.skip(f"{path} not available")
    return json.loads(path.read_text())
