"""Tests for hvdtrain.hosts: host name validation, hostfiles and -H lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hvdtrain.hosts import (
    Host,
    HostfileError,
    check_hostfile,
    format_hostfile,
    format_hosts_arg,
    parse_hostfile,
    parse_hosts_arg,
    total_slots,
    validate_hostname,
)

HOSTFILES_DIR = Path(__file__).resolve().parent.parent / "hostfiles"
STRICT_LINE = re.compile(r"[A-Za-z0-9_.-]+ slots=[1-9][0-9]*")

SHELL_INJECTIONS = [
    "a;rm -rf /",
    "$(id)",
    "`x`",
    "a b",
    "-oProxyCommand=x",
    "a|b",
    "a&b",
    "a>b",
    "a<b",
    "a'b",
    'a"b',
    "a\\b",
    "a*",
    "a?",
    "a\nb",
    "a\tb",
    "node1\n",
    "${HOME}",
    "a!b",
    "~root",
    "a(b)",
    "a{b,c}",
]


def write(tmp_path: Path, text: str, name: str = "hosts.txt") -> Path:
    """Write ``text`` to ``tmp_path/name`` and return the path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- validate_hostname -------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "node1",
        "gpu-01",
        "Node-A.cluster.example.com",
        "a",
        "1node",
        "10.0.0.1",
        "192.168.1.254",
        "255.255.255.255",
        "x" * 63,
        ".".join(["a" * 63] * 3) + "." + "b" * 61,  # 253 characters
        "xn--bcher-kva.example",
        "gpu_01",
        "node_1.cluster_a.example",
        "_node",
    ],
)
def test_validate_hostname_accepts(name: str) -> None:
    assert validate_hostname(name) == name


@pytest.mark.parametrize("name", SHELL_INJECTIONS)
def test_validate_hostname_rejects_shell_metacharacters(name: str) -> None:
    with pytest.raises(ValueError, match="invalid host name|must not start"):
        validate_hostname(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("-node", "must not start with '-'"),
        ("-", "must not start with '-'"),
        ("nöde", "contains 'ö'"),
        ("a:4", "contains ':'"),
        ("a=b", "contains '='"),
        ("a/b", "contains '/'"),
        ("a,b", "contains ','"),
        ("a#b", "contains '#'"),
        ("node.", "empty label"),
        (".node", "empty label"),
        ("a..b", "empty label"),
        ("node-", "must not start or end with '-'"),
        ("a.-b.c", "must not start or end with '-'"),
        ("x" * 64, "longer than 63"),
        (".".join(["a" * 63] * 4), "more than 253"),
        ("256.1.1.1", "neither a valid IPv4"),
        ("10.1", "neither a valid IPv4"),
        ("123", "neither a valid IPv4"),
        ("1.2.3.4.5", "neither a valid IPv4"),
        ("010.0.0.1", "neither a valid IPv4"),
        ("::1", "contains ':'"),
        ("[fe80::1]", "contains"),
    ],
)
def test_validate_hostname_rejects(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_hostname(name)


def test_validate_hostname_rejects_non_string() -> None:
    with pytest.raises(TypeError, match="must be a string"):
        validate_hostname(None)  # type: ignore[arg-type]


# --- Host ----------------------------------------------------------------------


def test_host_is_frozen_value() -> None:
    host = Host("node1", 4)
    assert host == Host("node1", 4)
    assert hash(host) == hash(Host("node1", 4))
    with pytest.raises(AttributeError):
        host.slots = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "slots"),
    [("node1", 0), ("node1", -1), ("node1", True), ("node1", 2.0), ("a;b", 1), ("", 1)],
)
def test_host_rejects_invalid(name: str, slots: int) -> None:
    with pytest.raises(ValueError):
        Host(name, slots)


# --- parse_hostfile / check_hostfile ------------------------------------------


def test_parse_hostfile_lenient_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# cluster A\n"
        "\n"
        "node1 slots=4\n"
        "   node2    slots=2   # trailing comment\n"
        "node3\n"
        "node4 slots=2 max_slots=4\n"
        "node5 max-slots=3\n"
        "\t\n"
        "10.0.0.7 slots=8\n"
        "#node9 slots=100\n",
    )
    assert parse_hostfile(path) == [
        Host("node1", 4),
        Host("node2", 2),
        Host("node3", 1),
        Host("node4", 2),
        Host("node5", 1),
        Host("10.0.0.7", 8),
    ]
    assert check_hostfile(path) == []


def test_parse_hostfile_accepts_str_path_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "crlf"
    path.write_bytes(b"a slots=2\r\nb slots=3\r\n")
    assert parse_hostfile(str(path)) == [Host("a", 2), Host("b", 3)]


def test_parse_hostfile_without_trailing_newline(tmp_path: Path) -> None:
    path = write(tmp_path, "a slots=2\nb slots=3")
    assert parse_hostfile(path) == [Host("a", 2), Host("b", 3)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("node1 slots=x", "slots must be a positive integer, got 'x'"),
        ("node1 slots=0", "slots must be a positive integer, got '0'"),
        ("node1 slots=-2", "slots must be a positive integer, got '-2'"),
        ("node1 slots=", "slots must be a positive integer, got ''"),
        ("node1 slots=2.5", "slots must be a positive integer, got '2.5'"),
        ("node1 slots=+4", r"slots must be a positive integer, got '\+4'"),
        ("node1 slots=\uff14", "slots must be a positive integer"),
        ("node1 max_slots=0", "max_slots must be a positive integer, got '0'"),
        ("node1 max-slots=y", "max-slots must be a positive integer, got 'y'"),
        ("node1 slots=4 max_slots=2", r"max_slots \(2\) is less than slots \(4\)"),
        ("node1 cpus=4", "unknown key 'cpus'"),
        ("node1 Slots=4", "unknown key 'Slots'"),
        ("node1 slots=2 slots=4", "'slots' given twice"),
        ("node1 max_slots=2 max-slots=4", "'max-slots' given twice"),
        ("node1 4", "malformed token '4'"),
        ("node1 slots = 4", "malformed token 'slots'"),
        ("node1 =4", "malformed token '=4'"),
        ("slots=4", "expected a host name first"),
        ("node1:4", "is the -H form; in a hostfile write 'node1 slots=4'"),
        ("node_1;x slots=4", "invalid host name 'node_1;x'"),
        ("-oProxyCommand=x slots=1", "expected a host name first"),
        ("-node slots=1", "must not start with '-'"),
        ("$(id) slots=1", "invalid host name"),
        ("`x` slots=1", "invalid host name"),
        ("a;rm slots=1", "invalid host name"),
        ("a|b:2", "invalid host name"),
    ],
)
def test_hostfile_line_errors(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, f"# header\n\ngood slots=1\n{line}\n")
    with pytest.raises(HostfileError, match=message) as info:
        parse_hostfile(path)
    assert str(info.value).startswith(f"{path}:4: ")
    assert info.value.lineno == 4
    assert info.value.filename == str(path)
    problems = check_hostfile(path)
    assert len(problems) == 1
    assert problems[0] == str(info.value)


def test_hostfile_error_message_format(tmp_path: Path) -> None:
    path = write(tmp_path, "a slots=1\nb slots=2\nc slots=x\n")
    with pytest.raises(HostfileError) as info:
        parse_hostfile(path)
    assert str(info.value) == f"{path}:3: slots must be a positive integer, got 'x'"
    assert isinstance(info.value, ValueError)


def test_check_hostfile_reports_all_problems_with_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# comment\n"  # 1
        "node1 slots=4\n"  # 2
        "node2 slots=0\n"  # 3
        "\n"  # 4
        "node1 slots=2\n"  # 5: duplicate
        "node3 gpus=2\n"  # 6
        "bad;name slots=1\n"  # 7
        "NODE1\n"  # 8: duplicate, host names are case-insensitive
        "node4 slots=1\n",  # 9: fine
    )
    problems = check_hostfile(path)
    assert [p.split(":")[1] for p in problems] == ["3", "5", "6", "7", "8"]
    assert problems[1] == f"{path}:5: duplicate host 'node1' (first on line 2)"
    assert problems[4] == f"{path}:8: duplicate host 'NODE1' (first on line 2)"
    assert all(p.startswith(f"{path}:") for p in problems)
    with pytest.raises(HostfileError) as info:
        parse_hostfile(path)
    assert str(info.value) == problems[0]
    assert info.value.problems == problems


def test_duplicate_host_after_invalid_first_occurrence_is_not_duplicate(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "node1 slots=0\nnode1 slots=2\n")
    problems = check_hostfile(path)
    assert [p.split(":")[1] for p in problems] == ["1"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "   \n# x slots=1\n"])
def test_hostfile_without_hosts_is_an_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert check_hostfile(path) == [f"{path}: no hosts (the file is empty or only has comments)"]
    with pytest.raises(HostfileError, match="no hosts") as info:
        parse_hostfile(path)
    assert info.value.lineno is None


def test_hostfile_invalid_utf8_reported_with_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1"
    path.write_bytes(b"a slots=1\nn\xf6de slots=1\n")
    assert check_hostfile(path) == [f"{path}:2: line is not valid UTF-8"]


def test_missing_hostfile_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        parse_hostfile(tmp_path / "absent")
    with pytest.raises(FileNotFoundError):
        check_hostfile(tmp_path / "absent")


# --- parse_hosts_arg -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost", [Host("localhost", 1)]),
        ("localhost:4", [Host("localhost", 4)]),
        ("host1:4,host2:4", [Host("host1", 4), Host("host2", 4)]),
        ("host1,host2:2,host3", [Host("host1", 1), Host("host2", 2), Host("host3", 1)]),
        (" host1:4 , host2:2 ", [Host("host1", 4), Host("host2", 2)]),
        ("10.0.0.1:8,10.0.0.2:8", [Host("10.0.0.1", 8), Host("10.0.0.2", 8)]),
    ],
)
def test_parse_hosts_arg(text: str, expected: list[Host]) -> None:
    assert parse_hosts_arg(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "host list is empty"),
        ("  ", "host list is empty"),
        ("a:4,,b:4", "entry 2 is empty"),
        ("a:4,", "entry 2 is empty"),
        (",a:4", "entry 1 is empty"),
        ("a:4,a:2", r"entry 2 \('a:2'\): duplicate host \(first as entry 1\)"),
        ("a:4,A:2", "duplicate host"),
        ("a:0", "slots must be a positive integer, got '0'"),
        ("a:-1", "slots must be a positive integer, got '-1'"),
        ("a:x", "slots must be a positive integer, got 'x'"),
        ("a:", "slots must be a positive integer, got ''"),
        ("a:4:5", "expected host or host:slots"),
        (":4", "host name is empty"),
        ("a b:4", "invalid host name 'a b'"),
        ("a;rm -rf /:1", "invalid host name"),
        ("$(id):1", "invalid host name"),
        ("-oProxyCommand=x:1", "must not start with '-'"),
        ("node_1;x:2", "invalid host name 'node_1;x'"),
    ],
)
def test_parse_hosts_arg_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hosts_arg(text)


@pytest.mark.parametrize("name", SHELL_INJECTIONS)
def test_parse_hosts_arg_rejects_shell_metacharacters(name: str) -> None:
    with pytest.raises(ValueError):
        parse_hosts_arg(f"good:1,{name}:2")


@pytest.mark.parametrize("name", [n for n in SHELL_INJECTIONS if "\n" not in n])
def test_hostfile_rejects_shell_metacharacters(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"good slots=1\n{name} slots=2\n")
    problems = check_hostfile(path)
    assert problems, name
    assert all(p.startswith(f"{path}:") for p in problems)
    with pytest.raises(HostfileError):
        parse_hostfile(path)


# --- format_hostfile / format_hosts_arg / total_slots -------------------------------

HOST_LISTS = [
    [Host("localhost", 2)],
    [Host("node1", 4), Host("node2", 4)],
    [Host(f"gpu{i:02d}.cluster.example", 8) for i in range(1, 17)],
    [Host("10.0.0.1", 1), Host("b", 3), Host("a", 2)],
]


@pytest.mark.parametrize("hosts", HOST_LISTS)
def test_format_parse_round_trip(tmp_path: Path, hosts: list[Host]) -> None:
    text = format_hostfile(hosts)
    path = write(tmp_path, text)
    assert parse_hostfile(path) == hosts
    assert check_hostfile(path) == []
    assert parse_hosts_arg(format_hosts_arg(hosts)) == hosts


@pytest.mark.parametrize("hosts", HOST_LISTS)
def test_format_hostfile_is_strict(hosts: list[Host]) -> None:
    text = format_hostfile(hosts)
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert len(lines) == len(hosts)
    for line, host in zip(lines, hosts, strict=True):
        # One host per line, exactly "name slots=N": no comments, blanks or extra keys,
        # so a parser that takes the first word as host and the text after '=' as
        # slots (as horovodrun's does) reads it correctly.
        assert STRICT_LINE.fullmatch(line), line
        assert line.split()[0] == host.name
        assert int(line.split("=")[1]) == host.slots


def test_format_hostfile_exact_text() -> None:
    hosts = [Host("node1", 4), Host("node2", 2)]
    assert format_hostfile(hosts) == "node1 slots=4\nnode2 slots=2\n"
    assert format_hosts_arg(hosts) == "node1:4,node2:2"
    assert format_hostfile(iter(hosts)) == "node1 slots=4\nnode2 slots=2\n"


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([], "no hosts"),
        ([Host("a", 1), Host("a", 2)], "duplicate host 'a'"),
        ([Host("a", 1), Host("A", 2)], "duplicate host 'A'"),
    ],
)
def test_format_rejects(hosts: list[Host], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_hostfile(hosts)
    with pytest.raises(ValueError, match=message):
        format_hosts_arg(hosts)


def test_format_revalidates_tampered_host() -> None:
    host = Host("node1", 2)
    object.__setattr__(host, "name", "a;rm -rf /")
    with pytest.raises(ValueError, match="invalid host name"):
        format_hostfile([host])


@pytest.mark.parametrize(
    ("hosts", "total"),
    [
        ([], 0),
        ([Host("a", 1)], 1),
        ([Host("a", 4), Host("b", 4)], 8),
        (HOST_LISTS[2], 128),
    ],
)
def test_total_slots(hosts: list[Host], total: int) -> None:
    assert total_slots(hosts) == total
    assert total_slots(iter(hosts)) == total


# --- shipped example hostfiles --------------------------------------------------------


def test_example_hostfiles_exist() -> None:
    names = sorted(p.name for p in HOSTFILES_DIR.iterdir() if p.is_file())
    assert {"localhost", "2nodes-4gpus", "4nodes-8gpus"} <= set(names)


@pytest.mark.parametrize(
    "path",
    sorted(p for p in HOSTFILES_DIR.iterdir() if p.is_file()),
    ids=lambda p: p.name,
)
def test_every_example_hostfile_is_valid(path: Path) -> None:
    assert check_hostfile(path) == []
    hosts = parse_hostfile(path)
    assert hosts
    assert path.read_text(encoding="utf-8").startswith("#"), "needs a comment header"


@pytest.mark.parametrize(
    ("name", "num_hosts", "slots"),
    [("localhost", 1, 2), ("2nodes-4gpus", 2, 4), ("4nodes-8gpus", 4, 8)],
)
def test_example_hostfile_shapes(name: str, num_hosts: int, slots: int) -> None:
    hosts = parse_hostfile(HOSTFILES_DIR / name)
    assert len(hosts) == num_hosts
    assert all(h.slots == slots for h in hosts)
    assert total_slots(hosts) == num_hosts * slots
