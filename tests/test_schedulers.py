"""Tests for hvdtrain.schedulers: Slurm, PBS and LSF allocations from env dicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvdtrain.hosts import Host
from hvdtrain.schedulers import (
    ClusterEnvironment,
    LSFEnvironment,
    PBSEnvironment,
    SchedulerError,
    SlurmEnvironment,
    detect_environment,
    expected_world_size,
)


def slurm_env(nodelist: str, **extra: str) -> dict[str, str]:
    """A minimal Slurm job environment."""
    return {"SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": nodelist, **extra}


def pbs_env(tmp_path: Path, lines: list[str]) -> dict[str, str]:
    """A PBS job environment whose node file holds ``lines``."""
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return {"PBS_JOBID": "42.pbs01", "PBS_NODEFILE": str(nodefile)}


def lsf_env(mcpu_hosts: str) -> dict[str, str]:
    """An LSF job environment."""
    return {"LSB_JOBID": "777", "LSB_MCPU_HOSTS": mcpu_hosts}


# --- Slurm: node lists ------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodelist", "names"),
    [
        ("node1", ["node1"]),
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("node[001-002]", ["node001", "node002"]),
        ("node[8-11]", ["node8", "node9", "node10", "node11"]),
        ("a[1-2]-b[3-4]", ["a1-b3", "a1-b4", "a2-b3", "a2-b4"]),
        ("gpu[01-02]-ib[1,3]", ["gpu01-ib1", "gpu01-ib3", "gpu02-ib1", "gpu02-ib3"]),
        ("n1,n2,gpu[1-2]", ["n1", "n2", "gpu1", "gpu2"]),
        ("gpu[1-2],cpu[5,7]", ["gpu1", "gpu2", "cpu5", "cpu7"]),
        ("node[3].cluster.local", ["node3.cluster.local"]),
        ("10.0.0.[1-2]", ["10.0.0.1", "10.0.0.2"]),
        ("gpu_[1-2]", ["gpu_1", "gpu_2"]),
    ],
)
def test_slurm_nodelist_forms(nodelist: str, names: list[str]) -> None:
    env = SlurmEnvironment(slurm_env(nodelist))
    assert env.nodes() == names
    assert env.hosts() == [Host(n, 1) for n in names]
    assert env.world_size() == len(names)


def test_slurm_falls_back_to_slurm_nodelist() -> None:
    env = {
        "SLURM_JOB_ID": "1",
        "SLURM_NODELIST": "n[1-2]",
        "SLURM_TASKS_PER_NODE": "2(x2)",
    }
    assert SlurmEnvironment.detect(env)
    assert SlurmEnvironment(env).hosts() == [Host("n1", 2), Host("n2", 2)]


def test_slurm_prefers_job_nodelist() -> None:
    env = slurm_env("a[1-2]", SLURM_NODELIST="b1")
    assert SlurmEnvironment(env).nodes() == ["a1", "a2"]


@pytest.mark.parametrize(
    ("nodelist", "message"),
    [
        ("node[1-3", "not a valid host list"),
        ("node[3-1]", "not a valid host list"),
        ("node[a-b]", "not a valid host list"),
        ("node[[1]]", "not a valid host list"),
        (",", "expands to no hosts"),
        ("n1,n1", "lists host 'n1' twice"),
        ("n[1-2],n2", "lists host 'n2' twice"),
        ("a;rm -rf /", "invalid host name"),
        ("$(id)", "invalid host name"),
        ("`x`", "invalid host name"),
        ("a b", "invalid host name"),
        ("-oProxyCommand=x", "must not start with '-'"),
    ],
)
def test_slurm_bad_nodelists(nodelist: str, message: str) -> None:
    env = SlurmEnvironment(slurm_env(nodelist))
    with pytest.raises(SchedulerError, match=message):
        env.hosts()


# --- Slurm: tasks per node ----------------------------------------------------------


@pytest.mark.parametrize(
    ("nodelist", "tasks_per_node", "slots"),
    [
        ("n[1-3]", "4(x2),2", [4, 4, 2]),
        ("n1", "2", [2]),
        ("n[1-3]", "1(x3)", [1, 1, 1]),
        ("n[1-4]", "8(x4)", [8, 8, 8, 8]),
        ("n[1-4]", "2,3(x2),1", [2, 3, 3, 1]),
        ("n[1-2]", " 4(x2) ", [4, 4]),
    ],
)
def test_slurm_tasks_per_node(nodelist: str, tasks_per_node: str, slots: list[int]) -> None:
    env = SlurmEnvironment(slurm_env(nodelist, SLURM_TASKS_PER_NODE=tasks_per_node))
    hosts = env.hosts()
    assert [h.slots for h in hosts] == slots
    assert env.world_size() == sum(slots)
    # SLURM_NTASKS agreeing with the per-node counts is accepted.
    env_with_ntasks = slurm_env(nodelist, SLURM_TASKS_PER_NODE=tasks_per_node, SLURM_NTASKS=str(sum(slots)))
    assert SlurmEnvironment(env_with_ntasks).world_size() == sum(slots)


@pytest.mark.parametrize(
    ("nodelist", "tasks_per_node", "message"),
    [
        ("n[1-3]", "4(x2)", "describes 2 nodes but the node list has 3"),
        ("n[1-2]", "4(x2),2", "describes 3 nodes but the node list has 2"),
        ("n1", "1(x3)", "describes 3 nodes but the node list has 1"),
        ("n[1-2]", "4(x2", "malformed"),
        ("n[1-2]", "4x2", "malformed"),
        ("n[1-2]", "4,,4", "malformed"),
        ("n[1-2]", "four", "malformed"),
        ("n[1-2]", "-1,4", "malformed"),
        ("n[1-2]", "0,4", "gives a node no tasks"),
        ("n[1-2]", "4(x0),4,4", "repeat count of zero"),
        ("n[1-2]", "4(x00),4,4", "repeat count of zero"),
    ],
)
def test_slurm_tasks_per_node_mismatch(nodelist: str, tasks_per_node: str, message: str) -> None:
    env = SlurmEnvironment(slurm_env(nodelist, SLURM_TASKS_PER_NODE=tasks_per_node))
    with pytest.raises(SchedulerError, match=message):
        env.hosts()
    with pytest.raises(SchedulerError):
        env.world_size()


@pytest.mark.parametrize(
    ("tasks_per_node", "ntasks"),
    [("4(x2)", "6"), ("4(x2)", "9"), ("1(x2)", "1")],
)
def test_slurm_ntasks_disagrees_with_tasks_per_node(tasks_per_node: str, ntasks: str) -> None:
    env = SlurmEnvironment(slurm_env("n[1-2]", SLURM_TASKS_PER_NODE=tasks_per_node, SLURM_NTASKS=ntasks))
    with pytest.raises(SchedulerError, match=f"SLURM_NTASKS={ntasks} but"):
        env.world_size()


@pytest.mark.parametrize(
    ("extra", "slots"),
    [
        ({"SLURM_NTASKS_PER_NODE": "4"}, [4, 4, 4]),
        ({"SLURM_NTASKS": "6"}, [2, 2, 2]),
        ({"SLURM_NTASKS": "7"}, [3, 2, 2]),
        ({"SLURM_NTASKS": "3"}, [1, 1, 1]),
        ({"SLURM_NPROCS": "5"}, [2, 2, 1]),
        ({}, [1, 1, 1]),
        ({"SLURM_NTASKS_PER_NODE": "2", "SLURM_NTASKS": "6"}, [2, 2, 2]),
        ({"SLURM_TASKS_PER_NODE": "1,2,3", "SLURM_NTASKS_PER_NODE": "9"}, [1, 2, 3]),
    ],
)
def test_slurm_fallbacks_without_tasks_per_node(extra: dict[str, str], slots: list[int]) -> None:
    env = SlurmEnvironment(slurm_env("n[1-3]", **extra))
    assert [h.slots for h in env.hosts()] == slots
    assert env.world_size() == sum(slots)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"SLURM_NTASKS": "2"}, "SLURM_NTASKS=2 is fewer than the 3 allocated nodes"),
        ({"SLURM_NTASKS": "x"}, "SLURM_NTASKS must be a positive integer, got 'x'"),
        ({"SLURM_NTASKS": "0"}, "SLURM_NTASKS must be a positive integer, got '0'"),
        (
            {"SLURM_NTASKS_PER_NODE": "-4"},
            "SLURM_NTASKS_PER_NODE must be a positive integer",
        ),
        ({"SLURM_NTASKS_PER_NODE": "2", "SLURM_NTASKS": "5"}, "SLURM_NTASKS=5 but"),
    ],
)
def test_slurm_fallback_errors(extra: dict[str, str], message: str) -> None:
    env = SlurmEnvironment(slurm_env("n[1-3]", **extra))
    with pytest.raises(SchedulerError, match=message):
        env.world_size()


def test_scheduler_error_is_value_error() -> None:
    assert issubclass(SchedulerError, ValueError)


@pytest.mark.parametrize(
    ("env", "detected"),
    [
        (slurm_env("n1"), True),
        ({"SLURM_JOB_ID": "1", "SLURM_NODELIST": "n1"}, True),
        ({"SLURM_JOB_ID": "1"}, False),
        ({"SLURM_JOB_NODELIST": "n1"}, False),
        ({"SLURM_JOB_ID": "", "SLURM_JOB_NODELIST": "n1"}, False),
        ({}, False),
    ],
)
def test_slurm_detect(env: dict[str, str], detected: bool) -> None:
    assert SlurmEnvironment.detect(env) is detected


# --- PBS --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "hosts"),
    [
        (["n1"], [Host("n1", 1)]),
        (["n1", "n1", "n1", "n1"], [Host("n1", 4)]),
        (["n1", "n1", "n2", "n2"], [Host("n1", 2), Host("n2", 2)]),
        (
            ["n2", "n1", "n2", "n3", "n1", "n2"],
            [Host("n2", 3), Host("n1", 2), Host("n3", 1)],
        ),
        (
            ["b.cluster", "", "  a.cluster  ", "b.cluster"],
            [Host("b.cluster", 2), Host("a.cluster", 1)],
        ),
        (["N1", "n1"], [Host("N1", 2)]),
        (["10.1.0.5"] * 8, [Host("10.1.0.5", 8)]),
    ],
)
def test_pbs_nodefile(tmp_path: Path, lines: list[str], hosts: list[Host]) -> None:
    env = PBSEnvironment(pbs_env(tmp_path, lines))
    assert env.hosts() == hosts
    assert env.world_size() == sum(1 for line in lines if line.strip())


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "lists no hosts"),
        (["", "   "], "lists no hosts"),
        (["n1", "a;rm -rf /"], r"nodefile:2: invalid host name"),
        (["$(id)"], r"nodefile:1: invalid host name"),
        (["n1 4"], r"nodefile:1: invalid host name 'n1 4'"),
        (["-oProxyCommand=x"], "must not start with '-'"),
    ],
)
def test_pbs_bad_nodefile(tmp_path: Path, lines: list[str], message: str) -> None:
    env = PBSEnvironment(pbs_env(tmp_path, lines))
    with pytest.raises(SchedulerError, match=message):
        env.hosts()


def test_pbs_missing_nodefile(tmp_path: Path) -> None:
    env = PBSEnvironment({"PBS_JOBID": "1", "PBS_NODEFILE": str(tmp_path / "absent")})
    with pytest.raises(SchedulerError, match="cannot read PBS_NODEFILE"):
        env.world_size()


def test_pbs_crlf_nodefile(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodefile"
    nodefile.write_bytes(b"n1\r\nn1\r\nn2\r\n")
    env = PBSEnvironment({"PBS_JOBID": "1", "PBS_NODEFILE": str(nodefile)})
    assert env.hosts() == [Host("n1", 2), Host("n2", 1)]


@pytest.mark.parametrize(
    ("env", "detected"),
    [
        ({"PBS_JOBID": "1", "PBS_NODEFILE": "/x"}, True),
        ({"PBS_JOBID": "1"}, False),
        ({"PBS_NODEFILE": "/x"}, False),
        ({}, False),
    ],
)
def test_pbs_detect(env: dict[str, str], detected: bool) -> None:
    assert PBSEnvironment.detect(env) is detected


# --- LSF --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mcpu_hosts", "hosts"),
    [
        ("hostA 4", [Host("hostA", 4)]),
        ("hostA 4 hostB 4", [Host("hostA", 4), Host("hostB", 4)]),
        ("batch1 1 h1 42 h2 42 ", [Host("batch1", 1), Host("h1", 42), Host("h2", 42)]),
        ("  a 1   b 2\tc 3\n", [Host("a", 1), Host("b", 2), Host("c", 3)]),
    ],
)
def test_lsf_hosts(mcpu_hosts: str, hosts: list[Host]) -> None:
    env = LSFEnvironment(lsf_env(mcpu_hosts))
    assert env.hosts() == hosts
    assert env.world_size() == sum(h.slots for h in hosts)


@pytest.mark.parametrize(
    ("mcpu_hosts", "message"),
    [
        ("   ", "LSB_MCPU_HOSTS is empty"),
        ("hostA", "odd number of fields"),
        ("hostA 4 hostB", "odd number of fields"),
        ("hostA four", "count for 'hostA' must be a positive integer, got 'four'"),
        ("hostA 0", "got '0'"),
        ("hostA -2", "got '-2'"),
        ("4 hostA", "invalid host name '4'"),
        ("hostA 2 hostA 2", "lists host 'hostA' twice"),
        ("a;rm 1", "invalid host name"),
        ("$(id) 1", "invalid host name"),
        ("-oProxyCommand=x 1", "must not start with '-'"),
    ],
)
def test_lsf_bad_hosts(mcpu_hosts: str, message: str) -> None:
    env = LSFEnvironment(lsf_env(mcpu_hosts))
    with pytest.raises(SchedulerError, match=message):
        env.hosts()


@pytest.mark.parametrize(
    ("env", "detected"),
    [
        (lsf_env("a 1"), True),
        ({"LSB_JOBID": "1"}, False),
        ({"LSB_MCPU_HOSTS": "a 1"}, False),
        ({}, False),
    ],
)
def test_lsf_detect(env: dict[str, str], detected: bool) -> None:
    assert LSFEnvironment.detect(env) is detected


# --- detection and expected_world_size -------------------------------------------------


def test_detect_environment_none_outside_a_job() -> None:
    assert detect_environment({"HOME": "/root", "PATH": "/bin"}) is None
    assert expected_world_size({"HOME": "/root"}) is None


def test_detect_environment_each_scheduler(tmp_path: Path) -> None:
    assert isinstance(detect_environment(slurm_env("n1")), SlurmEnvironment)
    assert isinstance(detect_environment(pbs_env(tmp_path, ["n1"])), PBSEnvironment)
    assert isinstance(detect_environment(lsf_env("n1 2")), LSFEnvironment)


def test_job_id_of_each_scheduler(tmp_path: Path) -> None:
    """What `hvdtrain check` names the allocation by: the id the scheduler's own commands take."""
    ids = [detect_environment(env).job_id() for env in (slurm_env("n1"), pbs_env(tmp_path, ["n1"]), lsf_env("n1 2"))]
    assert ids == ["1234", "42.pbs01", "777"]


def test_check_names_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    from hvdtrain.doctor import _scheduler

    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[1-2]")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "2(x2)")
    assert _scheduler() == ("Scheduler", "slurm job 1234: 4 slot(s) on n1:2,n2:2")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "2")
    assert _scheduler()[1].startswith("slurm job 1234: malformed allocation: SLURM_TASKS_PER_NODE='2' describes 1")


def test_detect_environment_order_slurm_first(tmp_path: Path) -> None:
    env = {**lsf_env("l1 2"), **pbs_env(tmp_path, ["p1"]), **slurm_env("s[1-2]")}
    found = detect_environment(env)
    assert isinstance(found, SlurmEnvironment)
    assert found.name == "slurm"
    without_slurm = {k: v for k, v in env.items() if not k.startswith("SLURM")}
    found = detect_environment(without_slurm)
    assert isinstance(found, PBSEnvironment)
    assert found.name == "pbs"
    only_lsf = {k: v for k, v in without_slurm.items() if not k.startswith("PBS")}
    found = detect_environment(only_lsf)
    assert isinstance(found, LSFEnvironment)
    assert found.name == "lsf"


def test_detect_environment_defaults_to_os_environ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID"):
        monkeypatch.delenv(key, raising=False)
    assert detect_environment() is None
    assert expected_world_size() is None
    monkeypatch.setenv("LSB_JOBID", "9")
    monkeypatch.setenv("LSB_MCPU_HOSTS", "a 3 b 5")
    assert isinstance(detect_environment(), LSFEnvironment)
    assert expected_world_size() == 8
    assert LSFEnvironment().hosts() == [Host("a", 3), Host("b", 5)]


@pytest.mark.parametrize(
    ("env", "size"),
    [
        (slurm_env("gpu[01-04]", SLURM_TASKS_PER_NODE="8(x4)", SLURM_NTASKS="32"), 32),
        (slurm_env("n[1-3]", SLURM_TASKS_PER_NODE="4(x2),2"), 10),
        (slurm_env("n1"), 1),
        (lsf_env("a 4 b 4"), 8),
    ],
)
def test_expected_world_size(env: dict[str, str], size: int) -> None:
    assert expected_world_size(env) == size


def test_expected_world_size_pbs(tmp_path: Path) -> None:
    assert expected_world_size(pbs_env(tmp_path, ["n1", "n2", "n1", "n2", "n1"])) == 5


def test_expected_world_size_raises_on_inconsistent_job() -> None:
    with pytest.raises(SchedulerError):
        expected_world_size(slurm_env("n[1-2]", SLURM_TASKS_PER_NODE="4(x2)", SLURM_NTASKS="4"))


def test_cluster_environment_is_abstract() -> None:
    with pytest.raises(TypeError):
        ClusterEnvironment({})  # type: ignore[abstract]


def test_custom_environment_default_world_size() -> None:
    class Fixed(ClusterEnvironment):
        name = "fixed"

        @staticmethod
        def detect(env: object) -> bool:
            return True

        def hosts(self) -> list[Host]:
            return [Host("a", 2), Host("b", 3)]

    assert Fixed({}).world_size() == 5
