"""``lastwill explain``, ``lastwill wills`` and the operator's commands (``disconnect``, ``delete-session``,
``publish-will``, ``cancel-will``, ``retained``): ask a running broker's admin API, print readable text.

Standard library only (urllib): the admin API is plain JSON over HTTP. The text is meant to be
pasted into an issue: local times with the UTC offset, aligned columns, one line per event.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime

from .config import ADMIN_ENV, CONFIG_ENV, load, parse_listen

DEFAULT_ADMIN = "http://127.0.0.1:8080"
TOKEN_ENV = "LASTWILL_ADMIN_TOKEN"


class AdminError(Exception):
    """The admin API could not answer; the message says why and what to do."""


# ---- where and how to ask ------------------------------------------------------------------------
def admin_target(admin: str | None, token: str | None, config_path: str | None,
                 environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """(base URL, token) of the running broker's admin API.

    The URL: ``admin`` (--admin), else $LASTWILL_ADMIN, else the broker's own admin_listen, else
    DEFAULT_ADMIN. The token: ``token`` (--token), else the broker's admin_token. The broker's settings
    are read as ``lastwill serve`` reads them: the config file (``config_path``, else $LASTWILL_CONFIG)
    under the LASTWILL_<KEY> variables (so $LASTWILL_ADMIN_TOKEN wins over the file's admin_token)."""
    environ = os.environ if environ is None else environ
    config = load(config_path or environ.get(CONFIG_ENV) or None, environ).config
    url = admin or environ.get(ADMIN_ENV) or None
    if url is None and config.admin_listen:
        host, port = parse_listen(config.admin_listen, "admin_listen")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    url = url or DEFAULT_ADMIN
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/"), token or config.admin_token or None


def fetch(base: str, path: str, token: str | None, timeout: float = 10.0, method: str = "GET") -> dict:
    request = urllib.request.Request(base + path, headers={"Accept": "application/json"}, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read().decode("utf-8")).get("error") or e.reason
        except (ValueError, AttributeError):
            message = e.reason
        if e.code == 401:
            raise AdminError(f"the admin API at {base} refused the request (401: {message}); pass --token, "
                             f"set {TOKEN_ENV}, or give --config with admin_token") from None
        raise AdminError(f"{message} (HTTP {e.code} from {base}{path})") from None
    except urllib.error.URLError as e:
        reason = getattr(e.reason, "strerror", None) or e.reason
        raise AdminError(f"cannot reach the admin API at {base}: {reason}; is the broker running with "
                         f"admin_listen set (e.g. --admin-listen 127.0.0.1:8080)? Use --admin URL to point "
                         f"elsewhere") from None
    except (OSError, ValueError) as e:
        raise AdminError(f"the admin API at {base} did not answer properly: {e}") from None


def timeline_path(client_id: str) -> str:
    return f"/api/clients/{urllib.parse.quote(client_id, safe='')}/timeline"


def _client(client_id: str) -> str:
    return urllib.parse.quote(client_id, safe="")


# an operator's commands: (HTTP method, path) for a client id
ACTIONS = {
    "disconnect": ("POST", lambda c: f"/api/clients/{_client(c)}/disconnect"),
    "delete-session": ("DELETE", lambda c: f"/api/sessions/{_client(c)}"),
    "publish-will": ("POST", lambda c: f"/api/clients/{_client(c)}/will/publish"),
    "cancel-will": ("POST", lambda c: f"/api/clients/{_client(c)}/will/cancel"),
}


# ---- formatting ------------------------------------------------------------------------------------
def local(epoch: float, with_date: bool = True) -> str:
    t = datetime.fromtimestamp(epoch).astimezone()
    return t.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S") + f".{t.microsecond // 1000:03d}"


def utc_offset(epoch: float) -> str:
    text = datetime.fromtimestamp(epoch).astimezone().strftime("%z")  # +0100
    return f"UTC{text[:3]}:{text[3:]}" if text else "local"


def duration(seconds: float) -> str:
    """3.250s, 2m05.3s, 3h02m, 2d03h."""
    s = max(0.0, seconds)
    if round(s, 3) < 60:
        return f"{s:.3f}s"
    s = round(s, 1)  # rounded before it is split, so that 299.98 reads 5m00.0s, not 4m60.0s
    if s < 3600:
        m, rest = divmod(s, 60)
        return f"{int(m)}m{rest:04.1f}s"
    if s < 86400:
        h, rest = divmod(int(s), 3600)
        return f"{h}h{rest // 60:02d}m"
    d, rest = divmod(int(s), 86400)
    return f"{d}d{rest // 3600:02d}h"


def _table(rows: list[list[str]], right: set[int] = frozenset(), last_free: bool = False) -> list[str]:
    """Aligned columns, two spaces apart; ``right``: right-aligned columns; the last column unpadded
    when ``last_free``."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = []
        for i, cell in enumerate(r):
            if last_free and i == len(r) - 1:
                cells.append(cell)
            else:
                cells.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        lines.append("  ".join(cells).rstrip())
    return lines


def format_timeline(body: dict) -> str:
    now = body["now"]
    client_id = body["client_id"]
    if body.get("connected"):
        where = f"connected from {body.get('peer') or '?'} (MQTT {body.get('protocol') or '?'})"
    elif body.get("session"):
        where = "not connected; its session is kept"
    else:
        where = "not connected; no session"
    if body.get("node") and body.get("connected"):  # a cluster: which node holds the client
        where = f"connected to node {body['node']}" + (f" from {body['peer']}" if body.get("peer") else "")
    lines = [f"client {client_id!r}: {where}"]
    if body.get("answered_by"):
        source = "the engine's record" if body.get("source") == "engine" else "this node's timeline"
        lines.append(f"asked:  node {body['answered_by']} ({source})")
    if body.get("source") != "engine":
        for f in body.get("fired") or []:  # the cluster's audit: which node published its wills
            lines.append(f"fired:  node {f['fired_by']} (epoch {f['by_epoch']}) published its will on "
                         f"{f['topic']!r} at {local(f['fired_ms'] / 1000)}"
                         + (f" (node {f['dead_node']} had died)" if f.get("dead_node") else ""))
    pending = body.get("pending")
    if pending:
        lines.append(f"will:   pending on {pending['topic']!r}, published at {local(pending['fire_at_epoch'])} "
                     f"(in {duration(pending['seconds_left'])}) unless the client reconnects")
    else:
        lines.append(f"will:   {body.get('will', 'none')}")
    lines.append(f"status: {body.get('summary', '')}")
    events = body.get("events") or []
    lines.append(f"times:  local ({utc_offset(now)}); asked at {local(now)}")
    lines.append("")
    if not events:
        lines.append("(no events recorded)")
        return "\n".join(lines) + "\n"
    rows = [["TIME", "SINCE PREV", "EVENT", "RULE", "DETAIL"]]
    previous = None
    for e in events:
        since = "" if previous is None else "+" + duration(e["at"] - previous)
        previous = e["at"]
        detail = e["detail"]
        fire_at = (e.get("data") or {}).get("fire_at")
        if e["kind"] == "deferred" and isinstance(fire_at, (int, float)):
            detail += f"; due {local(fire_at, with_date=False)}"
        rows.append([local(e["at"]), since, e["kind"], f"[{e['rule']}]" if e.get("rule") else "", detail])
    lines.extend(_table(rows, right={1}, last_free=True))
    return "\n".join(lines) + "\n"


def format_wills(body: dict) -> str:
    now = body["now"]
    wills = body.get("wills") or []
    armed = body.get("armed", 0)
    armed_text = f"{armed} armed will(s) of connected clients" if armed else "no armed wills"
    if not wills:
        return f"no pending wills ({armed_text}); asked at {local(now)} ({utc_offset(now)})\n"
    lines = [f"{len(wills)} pending will(s), soonest first ({armed_text}); times local ({utc_offset(now)}), "
             f"asked at {local(now)}", ""]
    nodes = any("node" in w for w in wills)  # a cluster: the node the client was on
    rows = [["CLIENT", *(["NODE"] if nodes else []), "TOPIC", "QOS", "RETAIN", "PUBLISHED AT", "IN", "CAUSE"]]
    for w in wills:
        cause = w.get("cause") or ""
        if w.get("recovered"):
            cause += " (recovered at start-up)"
        if w.get("dead_node"):
            cause += f" (node {w['dead_node']} died)"
        rows.append([w["client_id"], *([w.get("node") or ""] if nodes else []), w["topic"], str(w["qos"]),
                     "1" if w["retain"] else "0", local(w["fire_at_epoch"]), duration(w["seconds_left"]), cause])
    lines.extend(_table(rows, right={6 if nodes else 5}, last_free=True))
    return "\n".join(lines) + "\n"


# ---- the commands -------------------------------------------------------------------------------------
def explain(client_id: str, admin: str | None, token: str | None, config_path: str | None,
            as_json: bool = False) -> str:
    base, token = admin_target(admin, token, config_path)
    body = fetch(base, timeline_path(client_id), token)
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n" if as_json else format_timeline(body)


def pending_wills(admin: str | None, token: str | None, config_path: str | None, as_json: bool = False) -> str:
    base, token = admin_target(admin, token, config_path)
    body = fetch(base, "/api/wills", token)
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n" if as_json else format_wills(body)


def act(command: str, client_id: str, discard_will: bool, admin: str | None, token: str | None,
        config_path: str | None, as_json: bool = False) -> str:
    """``disconnect``, ``delete-session``, ``publish-will``, ``cancel-will``: what the broker did, in a line."""
    base, token = admin_target(admin, token, config_path)
    method, path = ACTIONS[command]
    query = "?discard_will=true" if discard_will else ""
    body = fetch(base, path(client_id) + query, token, method=method)
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n" if as_json else body["detail"] + "\n"


def retained(topic_filter: str, delete: bool, whole: bool, admin: str | None, token: str | None,
             config_path: str | None, as_json: bool = False) -> str:
    """``retained FILTER``: the retained messages matching a topic filter, or (``delete``) delete them."""
    base, token = admin_target(admin, token, config_path)
    query = "filter=" + urllib.parse.quote(topic_filter, safe="")
    if delete:
        body = fetch(base, f"/api/retained?{query}", token, method="DELETE")
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n" if as_json else body["detail"] + "\n"
    body = fetch(base, f"/api/retained?{query}" + ("&payload=true" if whole else ""), token)
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n" if as_json else format_retained(body, whole)


def format_retained(body: dict, whole: bool = False) -> str:
    items = body.get("retained") or []
    if not items:
        return f"no retained message matches {body['filter']!r}\n"
    if whole:  # each message in full: topic, then its payload
        out = []
        for r in items:
            text = r["payload"] if r["payload"] is not None else f"(binary, base64) {r['payload_base64']}"
            out.append(f"{r['topic']} (qos {r['qos']}, {r['bytes']} bytes): {text}")
        return "\n".join(out) + "\n"
    rows = [["TOPIC", "QOS", "BYTES", "EXPIRES IN", "PAYLOAD"]]
    for r in items:
        text = r["payload"] if r["payload"] is not None else "(binary)"
        text = text.replace("\n", "\\n") + ("..." if r["truncated"] else "")
        expires = "never" if r["expires_in"] is None else duration(r["expires_in"])
        rows.append([r["topic"], str(r["qos"]), str(r["bytes"]), expires, text])
    lines = [f"{len(items)} retained message(s) matching {body['filter']!r}", ""]
    lines.extend(_table(rows, right={1, 2, 3}, last_free=True))
    return "\n".join(lines) + "\n"
