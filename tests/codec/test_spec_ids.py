"""Requirement ids: every id the codec cites exists, and case names carry the ids they test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lastwill.codec

from .cases import BAD, GOOD
from .spec import requirement_ids

CODEC_DIR = Path(lastwill.codec.__file__).parent
ID = re.compile(r"MQTT-[0-9][0-9.-]*[0-9]")


def test_every_rule_cited_by_the_codec_exists():
    known = requirement_ids()
    cited = {m for f in CODEC_DIR.glob("*.py") for m in ID.findall(f.read_text())}
    assert cited, "no ids found"
    assert cited <= known, sorted(cited - known)


def test_every_rule_in_the_golden_table_exists():
    known = requirement_ids()
    rules = {c.rule for c in BAD if c.rule}
    assert rules <= known, sorted(rules - known)


def _as_name(rule: str) -> str:
    return rule.replace(".", "_").replace("-", "_")


@pytest.mark.parametrize("case", [c for c in BAD if c.rule], ids=lambda c: c.name)
def test_bad_case_names_carry_their_rule(case):
    assert case.name.endswith(_as_name(case.rule)), case.name


def test_golden_names_citing_a_rule_are_well_formed():
    for case in GOOD + BAD:
        for part in re.findall(r"MQTT_[0-9_]+", case.name):
            assert re.fullmatch(r"MQTT(_\d+){4}", part), case.name
