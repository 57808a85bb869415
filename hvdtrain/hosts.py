"""Hostfiles and host lists in the ``host slots=N`` format.

Reading is lenient (comments, blank lines, ``max_slots``/``max-slots``, a missing
``slots`` meaning 1); writing is strict: :func:`format_hostfile` emits exactly
``name slots=N`` per line, a form both horovodrun's hostfile parser and
Open MPI's ``mpirun`` accept.  horovodrun's parser has no comment support and
crashes on a blank line or a line without ``slots=``, so always hand it a file
written by :func:`format_hostfile`, never the user's file as is.

Host names end up on ``/bin/sh`` and ``ssh`` command lines, so every name that
enters through this module goes through :func:`validate_hostname`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "Host",
    "HostfileError",
    "check_hostfile",
    "format_hostfile",
    "format_hosts_arg",
    "parse_hostfile",
    "parse_hosts_arg",
    "total_slots",
    "validate_hostname",
]

MAX_HOSTNAME_LENGTH = 253
MAX_LABEL_LENGTH = 63

_LABEL_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_ALLOWED_CHARS_RE = re.compile(r"[A-Za-z0-9_.-]")
_COUNT_RE = re.compile(r"[0-9]+")
_SLOTS_KEYS = ("slots",)
_MAX_SLOTS_KEYS = ("max_slots", "max-slots")


@dataclass(frozen=True)
class Host:
    """One host and the number of processes (slots) it may run."""

    name: str
    slots: int

    def __post_init__(self) -> None:
        """Reject invalid names and non-positive slot counts."""
        validate_hostname(self.name)
        if isinstance(self.slots, bool) or not isinstance(self.slots, int) or self.slots < 1:
            raise ValueError(f"slots must be a positive integer, got {self.slots!r}")


class HostfileError(ValueError):
    """A hostfile problem, reported as ``file:line: reason``.

    ``problems`` holds every problem found in the file (the message is the first).
    """

    def __init__(
        self,
        filename: str,
        lineno: int | None,
        reason: str,
        problems: list[str] | None = None,
    ) -> None:
        self.filename = filename
        self.lineno = lineno
        self.reason = reason
        message = _location(filename, lineno) + reason
        self.problems = problems if problems is not None else [message]
        super().__init__(message)


def _location(filename: str, lineno: int | None) -> str:
    return f"{filename}: " if lineno is None else f"{filename}:{lineno}: "


def validate_hostname(name: str) -> str:
    """Return ``name`` if it is a safe DNS host name or IPv4 address, else raise ValueError.

    Accepted: RFC 1123 names (labels of letters, digits, underscores and inner
    hyphens, 1-63 characters, 253 in all) and dotted-quad IPv4 addresses.  The
    underscore is not RFC 1123 but Horovod accepts it and real clusters use it
    (``gpu_01``); it is no shell metacharacter.  Everything else is rejected, in
    particular shell metacharacters, whitespace, a leading ``-`` (which ssh and
    mpirun would read as an option), non-ASCII characters and all-numeric names
    that are not valid IPv4 addresses.
    """
    if not isinstance(name, str):
        raise TypeError(f"host name must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError("host name is empty")
    if name.startswith("-"):
        raise ValueError(f"invalid host name {name!r}: must not start with '-' (it would be read as an option)")
    bad = sorted({c for c in name if not _ALLOWED_CHARS_RE.fullmatch(c)})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise ValueError(
            f"invalid host name {name!r}: contains {shown} (only letters, digits, '_', '-' and '.' are allowed)"
        )
    if len(name) > MAX_HOSTNAME_LENGTH:
        raise ValueError(f"invalid host name {name[:20]!r}...: {len(name)} characters, more than {MAX_HOSTNAME_LENGTH}")
    labels = name.split(".")
    for label in labels:
        if not label:
            raise ValueError(f"invalid host name {name!r}: empty label (leading, trailing or '..')")
        if len(label) > MAX_LABEL_LENGTH:
            raise ValueError(
                f"invalid host name {name!r}: label {label[:20]!r}... is longer than {MAX_LABEL_LENGTH} characters"
            )
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(f"invalid host name {name!r}: label {label!r} must not start or end with '-'")
    if labels[-1].isdigit():
        # All-numeric final label: only a complete dotted-quad IPv4 address is
        # unambiguous ("10.1" or "123" would be read by inet_aton as 10.0.0.1, 0.0.0.123).
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise ValueError(
                f"invalid host name {name!r}: neither a valid IPv4 address "
                "nor a DNS name (the last label of a DNS name must not be all digits)"
            ) from None
    return name


def _is_valid_hostname(name: str) -> bool:
    try:
        validate_hostname(name)
    except ValueError:
        return False
    return True


def _parse_count(key: str, value: str) -> int:
    """Parse a positive decimal integer (ASCII digits only) for ``key``."""
    if not _COUNT_RE.fullmatch(value) or int(value) < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


def _parse_line(tokens: list[str]) -> Host:
    """Parse the tokens of one non-empty hostfile line into a Host."""
    name = tokens[0]
    if "=" in name:
        raise ValueError(f"line starts with {name!r}; expected a host name first")
    prefix, colon, suffix = name.rpartition(":")
    if colon and _COUNT_RE.fullmatch(suffix) and _is_valid_hostname(prefix):
        raise ValueError(f"{name!r} is the -H form; in a hostfile write '{prefix} slots={suffix}'")
    validate_hostname(name)
    seen: dict[str, str] = {}
    slots: int | None = None
    max_slots: int | None = None
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ValueError(f"malformed token {token!r} (expected key=value, e.g. slots=4)")
        if key in _SLOTS_KEYS:
            canonical = "slots"
        elif key in _MAX_SLOTS_KEYS:
            canonical = "max_slots"
        else:
            raise ValueError(f"unknown key {key!r} (expected slots, max_slots or max-slots)")
        if canonical in seen:
            raise ValueError(f"{key!r} given twice (first as {seen[canonical]!r})")
        seen[canonical] = token
        count = _parse_count(key, value)
        if canonical == "slots":
            slots = count
        else:
            max_slots = count
    if slots is None:
        slots = 1
    if max_slots is not None and max_slots < slots:
        raise ValueError(f"max_slots ({max_slots}) is less than slots ({slots})")
    return Host(name, slots)


def _scan_hostfile(
    path: str | os.PathLike[str],
) -> tuple[list[Host], list[HostfileError]]:
    """Read a hostfile, returning the valid hosts and every problem found."""
    filename = os.fspath(path)
    with open(filename, "rb") as f:
        data = f.read()
    hosts: list[Host] = []
    problems: list[HostfileError] = []
    first_seen: dict[str, int] = {}
    # bytes.splitlines splits on \n, \r\n and \r only, like Python's universal
    # newlines, so line numbers match what horovodrun and an editor show.
    for lineno, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(HostfileError(filename, lineno, "line is not valid UTF-8"))
            continue
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        try:
            host = _parse_line(tokens)
        except ValueError as exc:
            problems.append(HostfileError(filename, lineno, str(exc)))
            continue
        key = host.name.lower()
        if key in first_seen:
            problems.append(
                HostfileError(
                    filename,
                    lineno,
                    f"duplicate host {host.name!r} (first on line {first_seen[key]})",
                )
            )
            continue
        first_seen[key] = lineno
        hosts.append(host)
    if not hosts and not problems:
        problems.append(HostfileError(filename, None, "no hosts (the file is empty or only has comments)"))
    return hosts, problems


def check_hostfile(path: str | os.PathLike[str]) -> list[str]:
    """Return every problem in a hostfile as ``file:line: message``; empty if it is valid.

    Raises OSError if the file cannot be read.
    """
    _, problems = _scan_hostfile(path)
    return [str(p) for p in problems]


def parse_hostfile(path: str | os.PathLike[str]) -> list[Host]:
    """Parse a hostfile into hosts, in file order.

    Each line is ``host [slots=N] [max_slots=N]`` (``max-slots`` also accepted,
    ``slots`` defaults to 1, ``max_slots`` is checked then dropped); ``#`` starts
    a comment and blank lines are skipped.  Raises HostfileError for the first
    problem (all of them are in its ``problems``), OSError if unreadable.
    """
    hosts, problems = _scan_hostfile(path)
    if problems:
        first = problems[0]
        raise HostfileError(first.filename, first.lineno, first.reason, [str(p) for p in problems])
    return hosts


def parse_hosts_arg(text: str) -> list[Host]:
    """Parse a horovodrun ``-H`` value such as ``host1:4,host2:4`` (slots default to 1).

    Raises ValueError on an empty or malformed entry, an invalid host name or
    slot count, or a host listed twice.
    """
    if not text.strip():
        raise ValueError("host list is empty")
    hosts: list[Host] = []
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        where = f"host list entry {index} ({entry!r})"
        if not entry:
            raise ValueError(f"host list entry {index} is empty (stray ',')")
        parts = entry.split(":")
        if len(parts) > 2:
            raise ValueError(f"{where}: expected host or host:slots")
        try:
            slots = _parse_count("slots", parts[1]) if len(parts) == 2 else 1
            host = Host(validate_hostname(parts[0]), slots)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        key = host.name.lower()
        if key in first_seen:
            raise ValueError(f"{where}: duplicate host (first as entry {first_seen[key]})")
        first_seen[key] = index
        hosts.append(host)
    return hosts


def _checked(hosts: Iterable[Host]) -> list[Host]:
    """Re-validate hosts for output: non-empty, valid, no duplicates."""
    result = list(hosts)
    if not result:
        raise ValueError("no hosts to write")
    seen: set[str] = set()
    for host in result:
        validate_hostname(host.name)
        _parse_count("slots", str(host.slots))
        if host.name.lower() in seen:
            raise ValueError(f"duplicate host {host.name!r}")
        seen.add(host.name.lower())
    return result


def format_hostfile(hosts: Iterable[Host]) -> str:
    """Render hosts as a strict hostfile: exactly ``name slots=N\\n`` per host.

    Raises ValueError for an empty list or duplicate hosts, which neither
    horovodrun nor mpirun handles sensibly.
    """
    return "".join(f"{h.name} slots={h.slots}\n" for h in _checked(hosts))


def format_hosts_arg(hosts: Iterable[Host]) -> str:
    """Render hosts as a horovodrun/mpirun ``-H`` value: ``name:N,name:N``."""
    return ",".join(f"{h.name}:{h.slots}" for h in _checked(hosts))


def total_slots(hosts: Iterable[Host]) -> int:
    """Return the total number of slots over ``hosts``."""
    return sum(h.slots for h in hosts)
