"""The password file and the ACL file (lastwill.auth): parsing, hashing, matching. No broker here."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess

import pytest

from lastwill import auth
from lastwill.auth import (
    READ,
    WRITE,
    Acl,
    AuthFileError,
    PasswordFile,
    covers,
    hash_password,
    matches,
    parse_hash,
)

FAST = 1000  # iterations for test hashes


def pwfile(**users: str) -> PasswordFile:
    return PasswordFile.parse("".join(f"{u}:{hash_password(p, FAST)}\n" for u, p in users.items()), "pw")


# ==== hashes ======================================================================================


def test_hash_is_mosquitto_7_format_and_verifies():
    text = hash_password("s3cret", FAST)
    _, scheme, iterations, salt, digest = text.split("$")
    assert (scheme, iterations) == ("7", str(FAST))
    assert len(base64.b64decode(salt)) == auth.SALT_BYTES and len(base64.b64decode(digest)) == 64
    h = parse_hash(text)
    assert h.matches(b"s3cret") and not h.matches(b"s3cret ") and not h.matches(b"")
    assert h.digest == hashlib.pbkdf2_hmac("sha512", b"s3cret", h.salt, FAST)  # the standard KDF, nothing else


def test_hashes_are_salted():
    assert hash_password("same", FAST) != hash_password("same", FAST)


def test_default_iterations_are_slow_by_design():
    assert auth.DEFAULT_ITERATIONS >= 200_000
    assert parse_hash(hash_password("x")).iterations == auth.DEFAULT_ITERATIONS


def test_sha512_6_format_verifies():
    salt = b"0123456789ab"
    text = f"$6${base64.b64encode(salt).decode()}${base64.b64encode(hashlib.sha512(b'pw' + salt).digest()).decode()}"
    h = parse_hash(text)
    assert h.scheme == "6" and h.matches(b"pw") and not h.matches(b"pw2")
    assert h.text() == text


@pytest.fixture
def mosquitto_passwd():
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.fail("mosquitto_passwd missing: scripts/test.sh installs the mosquitto package")
    return exe


def test_file_made_by_real_mosquitto_passwd_verifies(tmp_path, mosquitto_passwd):
    """Debian's mosquitto_passwd (mosquitto 2.0): $7$ (its default, 101 iterations), $7$ with -I, $6$ with -H sha512."""
    f = tmp_path / "pw"
    subprocess.run([mosquitto_passwd, "-b", "-c", str(f), "alice", "wonder land"], check=True)
    subprocess.run([mosquitto_passwd, "-b", "-I", "2000", str(f), "bob", "b0b"], check=True)
    subprocess.run([mosquitto_passwd, "-H", "sha512", "-b", str(f), "carol", "c:ar\u00f6l"], check=True)
    pw = PasswordFile.load(f)
    assert set(pw.entries) == {"alice", "bob", "carol"}
    assert pw.entries["alice"].scheme == "7" and pw.entries["alice"].iterations == 101
    assert pw.entries["bob"].iterations == 2000 and pw.entries["carol"].scheme == "6"
    assert pw.verify("alice", b"wonder land") and pw.verify("bob", b"b0b")
    assert pw.verify("carol", "c:ar\u00f6l".encode())
    assert not pw.verify("alice", b"wonder") and not pw.verify("bob", b"B0B") and not pw.verify("carol", b"")
    assert len(pw.warnings) == 1 and "carol" in pw.warnings[0] and "$6$" in pw.warnings[0]


def test_verify_unknown_user_runs_the_same_hash(monkeypatch):
    """No timing hint: an unknown user costs one PBKDF2 with the file's usual iterations, like a known one."""
    pw = pwfile(alice="a", bob="b")
    calls = []
    real = hashlib.pbkdf2_hmac

    def spy(name, password, salt, iterations, *rest):
        calls.append((name, iterations, len(salt)))
        return real(name, password, salt, iterations, *rest)
    monkeypatch.setattr(auth.hashlib, "pbkdf2_hmac", spy)
    assert not pw.verify("alice", b"wrong")
    assert not pw.verify("nobody", b"wrong")
    assert not pw.verify("nobody", None)
    assert not pw.verify("alice", None)
    assert calls == [("sha512", FAST, auth.SALT_BYTES)] * 4


def test_verify_compares_in_constant_time(monkeypatch):
    seen = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: seen.append(len(a)) or real(a, b))
    pw = pwfile(alice="a")
    assert pw.verify("alice", b"a") and not pw.verify("alice", b"b") and not pw.verify("zed", b"a")
    assert seen == [64, 64, 64]


def test_verify_needs_a_password():
    pw = pwfile(alice="")  # even a user whose password is empty
    assert not pw.verify("alice", None) and pw.verify("alice", b"")


def test_cache_answers_only_what_was_verified():
    pw = pwfile(alice="a")
    assert not pw.cached("alice", b"a")
    pw.remember("alice", b"a")
    assert pw.cached("alice", b"a")
    assert not pw.cached("alice", b"b") and not pw.cached("alice", None) and not pw.cached("bob", b"a")
    pw.remember("bob", b"a")  # not a user: nothing remembered
    assert not pw.cached("bob", b"a")
    pw.set("alice", hash_password("new", FAST))  # a new password: the old one is no longer answered
    assert not pw.cached("alice", b"a")


def test_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(auth, "_CACHE_SIZE", 3)
    pw = pwfile(alice="a")
    for i in range(5):
        pw.remember("alice", b"a" + bytes([i]))
    assert len(pw._cache) == 3


@pytest.mark.parametrize("text,line,expected", [
    ("alice", 1, "expected 'user:hash'"),
    ("# c\n\nalice:plaintext", 3, "user 'alice': not a password hash lastwill knows"),
    (":$7$101$c2FsdHNhbHRzYWx0$" + "A" * 88, 1, "the user name is empty"),
    ("a:{h}\na:{h}", 2, "user 'a' appears twice"),
    ("a:$7$0$c2FsdA==${d}", 1, "iterations must be a number from 1 to"),
    ("a:$7$99999999999$c2FsdA==${d}", 1, "iterations must be a number from 1 to"),
    ("a:$7$x$c2FsdA==${d}", 1, "iterations must be a number"),
    ("a:$7$101$not*base64${d}", 1, "salt is not valid base64"),
    ("a:$7$101$c2FsdA==$c2hvcnQ=", 1, "64-byte PBKDF2-SHA512 hash, got 5 bytes"),
    ("a:$6$c2FsdA==$c2hvcnQ=", 1, "64-byte SHA-512 hash"),
    ("a:$5$abc$def", 1, "not a password hash"),
])
def test_bad_password_file_lines_named(text, line, expected):
    h = hash_password("x", FAST)
    d = base64.b64encode(b"\0" * 64).decode()
    with pytest.raises(AuthFileError) as info:
        PasswordFile.parse(text.replace("{h}", h).replace("{d}", d), "/etc/pw")
    message = str(info.value)
    assert message.startswith(f"password_file '/etc/pw' line {line}: ") and expected in message, message


def test_password_file_not_utf8_named_with_line(tmp_path):
    f = tmp_path / "pw"
    f.write_bytes(b"a:" + hash_password("x", FAST).encode() + b"\n\xff\xfe:x\n")
    with pytest.raises(AuthFileError, match=r"password_file '.*pw' line 2: not valid UTF-8"):
        PasswordFile.load(f)


def test_missing_password_file_named(tmp_path):
    with pytest.raises(AuthFileError, match=r"password_file '.*nope': cannot read it: No such file"):
        PasswordFile.load(tmp_path / "nope")


def test_set_and_delete_keep_other_lines():
    h = hash_password("x", FAST)
    pw = PasswordFile.parse(f"# team A\nalice:{h}\n\nbob:{h}\n", "pw")
    pw.set("alice", hash_password("y", FAST))
    pw.set("carol", hash_password("z", FAST))
    assert pw.delete("bob") and not pw.delete("bob")
    lines = pw.text().splitlines()
    assert lines[0] == "# team A" and lines[1].startswith("alice:$7$") and lines[2] == ""
    assert lines[3].startswith("carol:") and len(lines) == 4
    again = PasswordFile.parse(pw.text(), "pw")
    assert again.verify("alice", b"y") and again.verify("carol", b"z") and "bob" not in again


# ==== ACL: parsing ================================================================================

ACL_TEXT = """\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic write\tinbox/alice
topic deny alice/secret
topic sensors/+/temp

user bob with spaces
topic read bob/#

pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern deny devices/%c/locked
"""


def test_acl_parsed_into_sections():
    acl = Acl.parse(ACL_TEXT, "acl")
    assert [(r.access, r.topic, r.line) for r in acl.anonymous] == [(READ, "public/#", 2)]
    assert set(acl.users) == {"alice", "bob with spaces"}
    assert [(r.access, r.topic) for r in acl.users["alice"]] == [
        (READ | WRITE, "alice/#"), (WRITE, "inbox/alice"), (0, "alice/secret"), (READ | WRITE, "sensors/+/temp")]
    assert [(r.access, r.topic) for r in acl.patterns] == [
        (READ | WRITE, "devices/%c/#"), (READ, "users/%u/inbox"), (0, "devices/%c/locked")]
    assert acl.summary() == "2 user section(s), 1 rule(s) for clients without a user name, 3 pattern(s)"


def test_acl_topic_with_spaces_after_access():
    acl = Acl.parse("topic read my topic/with spaces\n")
    assert acl.anonymous[0].topic == "my topic/with spaces"
    assert acl.allowed(None, "c", "my topic/with spaces", READ)


@pytest.mark.parametrize("text,line,expected", [
    ("topic read a\nfoo bar\n", 2, "unknown keyword 'foo'"),
    ("topic maybe a/b\n", 1, "unknown access 'maybe'"),
    ("topic read\n", 1, "'topic read' has no topic"),
    ("\npattern deny\n", 2, "'pattern deny' has no topic"),
    ("topic\n", 1, "'topic' without a topic"),
    ("user\n", 1, "'user' without a user name"),
    ("topic read a/b+/c\n", 1, "'+' must be a whole level"),
    ("topic read a/#/c\n", 1, "'#' must be a whole level and the last one"),
    ("topic read a#\n", 1, "'#' must be a whole level"),
])
def test_bad_acl_lines_named(text, line, expected):
    with pytest.raises(AuthFileError) as info:
        Acl.parse(text, "/etc/acl")
    message = str(info.value)
    assert message.startswith(f"acl_file '/etc/acl' line {line}: ") and expected in message, message


def test_acl_file_not_utf8_named(tmp_path):
    f = tmp_path / "acl"
    f.write_bytes(b"topic read a\ntopic read \xff\n")
    with pytest.raises(AuthFileError, match=r"acl_file '.*acl' line 2: not valid UTF-8"):
        Acl.load(f)


# ==== ACL: matching ===============================================================================


@pytest.mark.parametrize("flt,topic,expected", [
    ("a/b", "a/b", True), ("a/b", "a/c", False), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("#", "x/y", True), ("+/+", "a/b", True), ("+", "a/b", False),
    ("#", "$SYS/x", False), ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True), ("a/+/c", "a//c", True),
])
def test_topic_matching_MQTT_4_7_2_1(flt, topic, expected):
    assert matches(tuple(flt.split("/")), topic.split("/")) is expected


@pytest.mark.parametrize("grant,sub,expected", [
    ("a/#", "a/+/b", True), ("a/#", "a/#", True), ("a/#", "a", True), ("a/#", "a/b", True), ("a/#", "#", False),
    ("a/#", "b/#", False), ("a/+/b", "a/#", False), ("a/+/b", "a/+/b", True), ("a/+/b", "a/x/b", True),
    ("a/+/b", "a/+/+", False), ("a/x/b", "a/+/b", False), ("#", "#", True), ("#", "a/+/#", True),
    ("+/b", "+/b", True), ("#", "$SYS/#", False), ("$SYS/#", "$SYS/brokers/+/clients/#", True),
    ("+/+", "a/#", False),
])
def test_subscription_covered_by_acl_filter(grant, sub, expected):
    assert covers(tuple(grant.split("/")), sub.split("/")) is expected


@pytest.fixture
def acl():
    return Acl.parse(ACL_TEXT, "acl")


def test_anonymous_rules_only_for_clients_without_user_name(acl):
    assert acl.allowed(None, "c1", "public/news", READ)
    assert not acl.allowed(None, "c1", "public/news", WRITE)
    assert not acl.allowed("alice", "c1", "public/news", READ)  # a user gets its own section, not these


def test_user_rules_read_write_and_default_readwrite(acl):
    assert acl.allowed("alice", "c", "alice/x/y", READ) and acl.allowed("alice", "c", "alice/x/y", WRITE)
    assert acl.allowed("alice", "c", "inbox/alice", WRITE) and not acl.allowed("alice", "c", "inbox/alice", READ)
    assert acl.allowed("alice", "c", "sensors/3/temp", WRITE) and acl.allowed("alice", "c", "sensors/3/temp", READ)
    assert not acl.allowed("alice", "c", "sensors/3/hum", READ)
    assert acl.allowed("bob with spaces", "c", "bob/1", READ) and not acl.allowed("bob with spaces", "c", "bob/1", WRITE)


def test_deny_wins_over_a_broader_grant(acl):
    assert not acl.allowed("alice", "c", "alice/secret", READ)
    assert not acl.allowed("alice", "c", "alice/secret", WRITE)
    assert acl.allowed("alice", "c", "alice/secret/more", READ)  # deny is a filter: exactly alice/secret


def test_anything_not_granted_is_denied(acl):
    assert not acl.allowed("mallory", "c", "alice/x", READ)  # a user without a section: patterns only
    assert not acl.allowed("alice", "c", "other", WRITE)
    assert not Acl.parse("", "empty").allowed(None, "c", "a", READ)


def test_patterns_with_client_id_and_user_name(acl):
    assert acl.allowed("mallory", "dev-1", "devices/dev-1/state", WRITE)
    assert not acl.allowed("mallory", "dev-1", "devices/dev-2/state", WRITE)
    assert not acl.allowed("mallory", "dev-1", "devices/dev-1/locked", WRITE)  # pattern deny
    assert acl.allowed("mallory", "dev-1", "users/mallory/inbox", READ)
    assert not acl.allowed("mallory", "dev-1", "users/alice/inbox", READ)
    assert acl.allowed(None, "dev-1", "devices/dev-1/x", READ)  # %c applies to anonymous clients too
    assert not acl.allowed(None, "dev-1", "users//inbox", READ)  # %u never applies without a user name


@pytest.mark.parametrize("client_id,username", [("a/b", "u"), ("+", "u"), ("#", "u"), ("c", "x/y"), ("c", "+")])
def test_pattern_values_with_wildcards_or_slashes_do_not_apply(client_id, username):
    acl = Acl.parse("pattern readwrite d/%c/#\npattern readwrite u/%u/#\n")
    for topic in ("d/a/b/x", "d/x/y", "u/x/y/z", "u/x"):
        assert not acl.allowed(username, client_id, topic, WRITE)


def test_dollar_topics_need_a_dollar_rule():
    acl = Acl.parse("topic read #\ntopic read $SYS/brokers/#\n")
    assert acl.allowed(None, "c", "a/b", READ)
    assert not acl.allowed(None, "c", "$SYS/other", READ)
    assert acl.allowed(None, "c", "$SYS/brokers/x", READ)


def test_may_subscribe_needs_a_read_rule_covering_the_whole_filter(acl):
    assert acl.may_subscribe("alice", "c", "alice/#")
    assert acl.may_subscribe("alice", "c", "sensors/+/temp")
    assert not acl.may_subscribe("alice", "c", "sensors/#")  # the rule covers only part of it
    assert not acl.may_subscribe("alice", "c", "inbox/alice")  # write only
    assert not acl.may_subscribe("alice", "c", "alice/secret")  # covered by a deny rule
    assert acl.may_subscribe(None, "dev-9", "devices/dev-9/#") and not acl.may_subscribe(None, "dev-9", "devices/+/x")


def test_compiled_rules_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(auth, "_COMPILED_CACHE", 5)
    acl = Acl.parse("pattern read d/%c\n")
    for i in range(20):
        assert acl.allowed(None, f"c{i}", f"d/c{i}", READ)
    assert len(acl._compiled) <= 5


# ==== configuration ===============================================================================


def test_allow_anonymous_default_depends_on_the_listeners():
    from lastwill.config import Config
    assert Config(listen=["127.0.0.1:1883", "[::1]:1883", "localhost:1"]).validate().anonymous_allowed()
    c = Config(listen=["127.0.0.1:1883", "0.0.0.0:1883"], password_file="pw").validate()
    assert not c.anonymous_allowed()  # one listener beyond loopback: nobody anonymous, on any listener
    assert Config(listen=["0.0.0.0:1883"], allow_anonymous=True).validate().anonymous_allowed()
    assert not Config(allow_anonymous=False).validate().anonymous_allowed()


@pytest.mark.parametrize("listen", ["0.0.0.0:1883", "[::]:1883", "192.0.2.1:1883", "broker.example:1883"])
def test_non_loopback_listener_without_any_login_refused(listen):
    from lastwill.config import Config
    from lastwill.errors import ConfigError
    with pytest.raises(ConfigError, match=re.escape(f"config key 'allow_anonymous': listener '{listen}' is not a loopback")):
        Config(listen=[listen]).validate()
    Config(listen=[listen], allow_anonymous=True).validate()
    Config(listen=[listen], password_file="pw").validate()


@pytest.mark.parametrize("key,value,expected", [
    ("allow_anonymous", "yes", "config key 'allow_anonymous': expected true or false"),
    ("password_file", 3, "config key 'password_file': expected the path of a file"),
    ("acl_file", ["a"], "config key 'acl_file': expected the path of a file"),
])
def test_bad_auth_settings_named(key, value, expected):
    from lastwill.config import Config
    from lastwill.errors import ConfigError
    with pytest.raises(ConfigError, match=expected):
        Config(**{key: value}).validate()
