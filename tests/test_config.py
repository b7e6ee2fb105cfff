"""The config schema (src/lastwill/config.py): one description of every key for flags, environment
variables, validation and docs/configuration.md; where values come from; named errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from lastwill import Broker, Config
from lastwill.config import (
    SCHEMA,
    SETTINGS,
    Kind,
    load,
    mosquitto_line,
    settings_markdown,
    stray_environment,
)
from lastwill.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_every_key_is_described_once():
    assert [s.name for s in SCHEMA] == [f.name for f in dataclasses.fields(Config)]
    for s in SCHEMA:
        assert s.help and not s.help.endswith("."), s.name
        assert s.flag == "--" + s.name.replace("_", "-") and s.env == "LASTWILL_" + s.name.upper()
    assert SETTINGS["fsync"].kind is Kind.CHOICE and SETTINGS["fsync"].choices == ("always", "batch", "off")
    assert SETTINGS["receive_maximum"].bounds == (1, 65535)
    assert SETTINGS["allow_anonymous"].kind is Kind.OPTIONAL_BOOL
    assert SETTINGS["admin_token"].secret and not SETTINGS["admin_listen"].secret


def test_the_bounds_of_the_schema_are_what_validate_enforces():
    for s in SCHEMA:
        if s.bounds is None:
            continue
        lo, hi = s.bounds
        Config(**{s.name: lo}).validate()
        with pytest.raises(ConfigError) as err:
            Config(**{s.name: hi + 1}).validate()
        what = f"an integer from {lo} to {hi}" if s.kind is Kind.INT else f"a number from {lo:g} to {hi:g}"
        assert str(err.value) == f"config key '{s.name}': expected {what}, got {hi + 1}"
        assert err.value.key == s.name


@pytest.mark.parametrize("key,given,stored", [("log_level", "DEBUG", "debug"), ("fsync", "Always", "always"),
                                              ("shutdown_wills", "PUBLISH", "publish")])
def test_enumerations_are_case_insensitive(key, given, stored):
    assert getattr(Config(**{key: given}).validate(), key) == stored


def test_an_enumeration_outside_its_choices_is_named():
    with pytest.raises(ConfigError, match=r"^config key 'fsync': expected one of always, batch, off, got 'sometimes'$"):
        Config(fsync="sometimes").validate()


@pytest.mark.parametrize("key,text,value", [
    ("listen", "127.0.0.1:1883, [::1]:1883", ["127.0.0.1:1883", "[::1]:1883"]),
    ("listen", "", []),
    ("memory", "TRUE", True), ("memory", "no", False), ("sys_events", "0", False), ("queue_qos0", "on", True),
    ("allow_anonymous", "", None), ("allow_anonymous", "yes", True),
    ("max_keep_alive", " 300 ", 300), ("recovery_grace", "2.5", 2.5), ("node_name", "n1", "n1"),
])
def test_a_setting_from_text(key, text, value):
    assert SETTINGS[key].parse(text) == value


@pytest.mark.parametrize("key,text,message", [
    ("memory", "maybe", "expected true or false, got 'maybe'"),
    ("max_keep_alive", "lots", "expected an integer, got 'lots'"),
    ("recovery_grace", "soon", "expected a number, got 'soon'"),
])
def test_a_setting_from_bad_text(key, text, message):
    with pytest.raises(ValueError) as err:
        SETTINGS[key].parse(text)
    assert str(err.value) == message


def test_precedence_flag_over_environment_over_file_over_default(tmp_path):
    cfg = tmp_path / "lastwill.toml"
    cfg.write_text("max_keep_alive = 100\nreceive_maximum = 7\n")
    env = {"LASTWILL_MAX_KEEP_ALIVE": "200", "LASTWILL_MAX_TOPIC_LEVELS": "9"}
    loaded = load(cfg, env, {"max_keep_alive": 300, "maximum_qos": None})
    c = loaded.config
    assert (c.max_keep_alive, c.receive_maximum, c.max_topic_levels, c.maximum_qos) == (300, 7, 9, 2)
    assert dict(loaded.origin) == {"max_keep_alive": "--max-keep-alive", "receive_maximum": f"config file {str(cfg)!r}",
                                   "max_topic_levels": "LASTWILL_MAX_TOPIC_LEVELS"}
    assert load(cfg, env).config.max_keep_alive == 200
    assert load(cfg).config.max_keep_alive == 100
    assert load().config.max_keep_alive == 65535


def test_the_admin_token_from_the_environment():
    loaded = load(None, {"LASTWILL_ADMIN_TOKEN": "s3cret", "LASTWILL_ADMIN_LISTEN": "0.0.0.0:8080"})
    assert (loaded.config.admin_token, loaded.config.admin_listen) == ("s3cret", "0.0.0.0:8080")


def test_a_bad_value_says_where_it_came_from(tmp_path):
    cfg = tmp_path / "lastwill.toml"
    cfg.write_text("receive_maximum = 0\n")
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert str(err.value) == (f"config key 'receive_maximum': expected an integer from 1 to 65535, got 0 "
                              f"(from config file {str(cfg)!r})")
    with pytest.raises(ConfigError) as err:
        load(None, {"LASTWILL_RECEIVE_MAXIMUM": "0"})
    assert str(err.value).endswith("got 0 (from LASTWILL_RECEIVE_MAXIMUM)") and err.value.key == "receive_maximum"
    with pytest.raises(ConfigError) as err:
        load(None, {"LASTWILL_MEMORY": "perhaps"})
    assert str(err.value) == "environment variable LASTWILL_MEMORY: expected true or false, got 'perhaps'"


def test_a_misspelled_config_key_gets_a_suggestion(tmp_path):
    cfg = tmp_path / "lastwill.toml"
    cfg.write_text("max_keepalive = 300\n")
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert str(err.value) == f"config file {str(cfg)!r}: unknown key 'max_keepalive'; did you mean 'max_keep_alive'?"
    cfg.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert str(err.value) == (f"config file {str(cfg)!r}: unknown key 'colour' (every key is in "
                              f"docs/configuration.md and 'lastwill serve --help')")


def test_broker_settings_raise_the_named_config_error():
    with pytest.raises(ConfigError) as err:
        Broker(max_keepalive=300)
    assert str(err.value) == "unknown key 'max_keepalive'; did you mean 'max_keep_alive'?"
    assert err.value.key == "max_keepalive"
    with pytest.raises(ConfigError) as err:
        Broker(receive_maximum=0)
    assert str(err.value) == "config key 'receive_maximum': expected an integer from 1 to 65535, got 0"
    assert Broker(memory=True, log_level="WARNING").config.log_level == "warning"


def test_stray_lastwill_variables_are_reported_only_when_they_look_misspelled():
    env = {"LASTWILL_MAX_KEEPALIVE": "300", "LASTWILL_SEED_CLIENT_DIR": "/x", "LASTWILL_CONFIG": "f",
           "LASTWILL_LOAD_CONNECTIONS": "10",
           "LASTWILL_ADMIN": "u", "LASTWILL_LOG_LEVEL": "debug", "PATH": "/bin"}
    assert stray_environment(env) == ["environment variable LASTWILL_MAX_KEEPALIVE is not a setting (ignored); "
                                      "did you mean LASTWILL_MAX_KEEP_ALIVE?"]


MOSQUITTO_CONF = """# /etc/mosquitto/mosquitto.conf
pid_file /run/mosquitto/mosquitto.pid

persistence true
listener 1883 0.0.0.0
allow_anonymous false
password_file /etc/mosquitto/passwd
"""


def test_a_mosquitto_conf_is_recognised(tmp_path):
    assert mosquitto_line(MOSQUITTO_CONF) == (2, "pid_file /run/mosquitto/mosquitto.pid")
    assert mosquitto_line('listen = ["127.0.0.1:1883"]\n') is None
    assert mosquitto_line("listen\n") is None  # not a mosquitto directive
    assert mosquitto_line("[section]\nport 1883\n") is None  # a broken TOML file, not a mosquitto.conf
    cfg = tmp_path / "mosquitto.conf"
    cfg.write_text(MOSQUITTO_CONF)
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert str(err.value) == (f"config file {str(cfg)!r}: this is a mosquitto.conf (line 2: 'pid_file "
                              f"/run/mosquitto/mosquitto.pid'): lastwill does not read mosquitto's format; its "
                              f"settings are TOML keys, listed with mosquitto's equivalents in docs/configuration.md")


def test_a_broken_toml_file_is_still_called_that(tmp_path):
    cfg = tmp_path / "lastwill.toml"
    cfg.write_text("listen = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(cfg)


def test_docs_configuration_lists_every_setting():
    """docs/configuration.md's table is the schema's (scripts/gen_configuration.py rewrites it)."""
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert settings_markdown() in doc
    for s in SCHEMA:
        assert f"| `{s.name}` | `{s.flag}` | `{s.env}` |" in doc
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_configuration.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_mosquitto_equivalents_in_the_docs_are_real_keys():
    doc = (REPO / "docs" / "configuration.md").read_text()
    table = doc.split("## Coming from mosquitto", 1)[1]
    rows = [line.split(" | ")[1] for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 10
    for row in rows:
        for key in row.split("`")[1::2]:
            name = key.split(" = ")[0]
            assert name in SETTINGS, name
