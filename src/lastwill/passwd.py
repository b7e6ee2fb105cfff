"""``lastwill passwd FILE USER``: add, change or delete a user of a password file (docs/security.md).

The password is asked twice with getpass (never echoed, never on the command line), or read from
the first line of standard input with ``--password-stdin`` (for scripts). The file is created if
missing (mode 0600); its other lines, comments included, are kept as they were; it is replaced
atomically (written beside it, then renamed), so a running broker never reads half a file.
Hashes are mosquitto's ``$7$`` (PBKDF2-HMAC-SHA512), so the file works with mosquitto 2.x too.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from pathlib import Path

from .auth import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    AuthFileError,
    PasswordFile,
    check_user_name,
    hash_password,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Add a user to a password file, change its password, or delete it (--delete). The "
                          "password is asked twice (or read from standard input with --password-stdin). "
                          "Use the file as password_file; send the broker SIGHUP to reload it.")
    parser.add_argument("file", metavar="FILE", help="the password file (created if missing)")
    parser.add_argument("user", metavar="USER", help="the user name")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (for scripts)")
    parser.add_argument("--delete", action="store_true", help="delete USER from FILE")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, metavar="N",
                        help=f"PBKDF2-SHA512 iterations (default {DEFAULT_ITERATIONS}: the CPU time of one "
                             f"login check grows with it; docs/security.md has the measured cost)")


def _fail(message: str) -> int:
    print(f"lastwill passwd: {message}", file=sys.stderr)
    return 1


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    second = getpass.getpass("Reenter password: ")
    if first != second:
        return None
    return first


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically, keeping its permissions (new files: 0600)."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    why = check_user_name(args.user)
    if why:
        return _fail(f"user {args.user!r}: {why}")
    if not 1 <= args.iterations <= MAX_ITERATIONS:
        return _fail(f"--iterations: expected 1 to {MAX_ITERATIONS}, got {args.iterations}")
    try:
        pw = PasswordFile.load(path) if path.exists() else PasswordFile(path=str(path))
    except AuthFileError as e:
        return _fail(f"{e}; fix it first (nothing was changed)")
    if args.delete:
        if not pw.delete(args.user):
            return _fail(f"user {args.user!r} is not in {str(path)!r}")
        action = "deleted"
    else:
        try:
            password = _read_password(args.password_stdin)
        except (EOFError, KeyboardInterrupt):
            return _fail("no password given; nothing was changed")
        if password is None:
            return _fail("the passwords do not match; nothing was changed")
        if not password:
            return _fail("empty password refused; nothing was changed")
        action = "changed" if args.user in pw else "added"
        pw.set(args.user, hash_password(password, args.iterations))
    try:
        _write(path, pw.text())
    except OSError as e:
        return _fail(f"cannot write {str(path)!r}: {e.strerror}")
    print(f"lastwill passwd: user {args.user!r} {action} in {str(path)!r}", file=sys.stderr)
    return 0
