"""Exact command lines from hvdtrain.launch for horovodrun, mpirun and no launcher."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hvdtrain.hosts import Host
from hvdtrain.launch import (
    DISCOVERY_SCRIPT,
    Elastic,
    HorovodKnobs,
    LaunchCommand,
    LaunchError,
    LaunchSpec,
    build_command,
)

PROG = ["python", "-m", "hvdtrain.recipes.digits", "--epochs", "3"]
OMPI = ["-bind-to", "none", "-map-by", "slot", "-mca", "pml", "ob1", "-mca", "btl", "^openib"]
TWO_HOSTS = (Host("node1", 4), Host("node2", 4))


def forged_host(name: object, slots: object) -> Host:
    """A Host that skipped Host.__post_init__'s checks, to prove build_command validates on its own."""
    host = object.__new__(Host)
    object.__setattr__(host, "name", name)
    object.__setattr__(host, "slots", slots)
    return host


def cmd(**kwargs) -> LaunchCommand:
    kwargs.setdefault("program", PROG)
    kwargs.setdefault("np", 2)
    return build_command(LaunchSpec(**kwargs))


def hvd(*flags: str, np: int = 2, hosts: str = "localhost:2") -> list[str]:
    return ["horovodrun", "-np", str(np), "-H", hosts, *flags, *PROG]


def mpi(*extra: str, np: int = 2, hosts: str = "localhost:2") -> list[str]:
    return ["mpirun", "--tag-output", "-np", str(np), "-H", hosts, *OMPI, *extra, *PROG]


# --- horovodrun ------------------------------------------------------------------------------------------------


def test_horovodrun_localhost_default():
    c = cmd()
    assert c.argv == hvd()
    assert c.env == {}


def test_horovodrun_multi_host():
    c = cmd(np=8, hosts=TWO_HOSTS)
    assert c.argv == hvd(np=8, hosts="node1:4,node2:4")


def test_horovodrun_fewer_ranks_than_slots():
    assert cmd(np=3, hosts=TWO_HOSTS).argv == hvd(np=3, hosts="node1:4,node2:4")


@pytest.mark.parametrize("controller", ["gloo", "mpi"])
def test_horovodrun_controller(controller):
    assert cmd(controller=controller).argv == hvd(f"--{controller}")


@pytest.mark.parametrize(
    ("knobs", "flags"),
    [
        (HorovodKnobs(fusion_threshold_mb=64), ["--fusion-threshold-mb", "64"]),
        (HorovodKnobs(fusion_threshold_mb=32.0), ["--fusion-threshold-mb", "32"]),
        (HorovodKnobs(fusion_threshold_mb=0), ["--fusion-threshold-mb", "0"]),
        (HorovodKnobs(cycle_time_ms=5), ["--cycle-time-ms", "5"]),
        (HorovodKnobs(cycle_time_ms=2.5), ["--cycle-time-ms", "2.5"]),
        (HorovodKnobs(cache_capacity=2048), ["--cache-capacity", "2048"]),
        (HorovodKnobs(hierarchical_allreduce=True), ["--hierarchical-allreduce"]),
        (HorovodKnobs(timeline="/tmp/tl.json"), ["--timeline-filename", "/tmp/tl.json"]),
        (
            HorovodKnobs(timeline="/tmp/tl.json", timeline_mark_cycles=True),
            ["--timeline-filename", "/tmp/tl.json", "--timeline-mark-cycles"],
        ),
        (HorovodKnobs(autotune=True), ["--autotune"]),
        (
            HorovodKnobs(autotune=True, autotune_log="/tmp/at.csv"),
            ["--autotune", "--autotune-log-file", "/tmp/at.csv"],
        ),
        (
            HorovodKnobs(stall_timeout_s=300),
            ["--stall-check-warning-time-seconds", "60", "--stall-check-shutdown-time-seconds", "300"],
        ),
        (
            HorovodKnobs(stall_timeout_s=30),
            ["--stall-check-warning-time-seconds", "15", "--stall-check-shutdown-time-seconds", "30"],
        ),
        (
            HorovodKnobs(stall_timeout_s=1.0),
            ["--stall-check-warning-time-seconds", "1", "--stall-check-shutdown-time-seconds", "1"],
        ),
        (HorovodKnobs(network_interface="eth0"), ["--network-interfaces", "eth0"]),
        (HorovodKnobs(network_interface="eth0,ib0"), ["--network-interfaces", "eth0,ib0"]),
        (HorovodKnobs(log_level="debug"), ["--log-level", "DEBUG"]),
    ],
)
def test_horovodrun_each_knob(knobs, flags):
    c = cmd(knobs=knobs)
    assert c.argv == hvd(*flags)
    assert c.env == {}


def test_horovodrun_all_knobs_order():
    knobs = HorovodKnobs(
        fusion_threshold_mb=64,
        cycle_time_ms=3,
        cache_capacity=0,
        hierarchical_allreduce=True,
        timeline="tl.json",
        timeline_mark_cycles=True,
        autotune=True,
        autotune_log="at.csv",
        stall_timeout_s=120,
        network_interface="ib0",
        log_level="INFO",
    )
    c = cmd(np=8, hosts=TWO_HOSTS, controller="gloo", knobs=knobs)
    assert c.argv == [
        "horovodrun", "-np", "8", "-H", "node1:4,node2:4", "--gloo",
        "--network-interfaces", "ib0",
        "--fusion-threshold-mb", "64",
        "--cycle-time-ms", "3",
        "--cache-capacity", "0",
        "--hierarchical-allreduce",
        "--timeline-filename", "tl.json",
        "--timeline-mark-cycles",
        "--autotune",
        "--autotune-log-file", "at.csv",
        "--stall-check-warning-time-seconds", "60",
        "--stall-check-shutdown-time-seconds", "120",
        "--log-level", "INFO",
        *PROG,
    ]  # fmt: skip


def test_horovodrun_root_and_extra_env_go_to_env():
    c = cmd(allow_run_as_root=True, extra_env={"PYTHONPATH": "/work/main"})
    assert c.argv == hvd()
    assert c.env == {
        "PYTHONPATH": "/work/main",
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    }


def test_horovodrun_fractional_fusion_mb_is_rejected():
    with pytest.raises(LaunchError, match="whole megabytes"):
        cmd(knobs=HorovodKnobs(fusion_threshold_mb=1.5))


def test_program_arguments_stay_separate_items():
    prog = [sys.executable, "-c", "print('a b')", "$(rm -rf /)"]
    assert cmd(program=prog).argv[-4:] == prog


# --- mpirun ----------------------------------------------------------------------------------------------------


def test_mpirun_localhost_default():
    c = cmd(launcher="mpirun")
    assert c.argv == mpi()
    assert c.env == {}


def test_mpirun_multi_host_and_root():
    c = cmd(launcher="mpirun", np=8, hosts=TWO_HOSTS, allow_run_as_root=True)
    assert c.argv == [
        "mpirun", "--allow-run-as-root", "--tag-output", "-np", "8", "-H", "node1:4,node2:4", *OMPI, *PROG,
    ]  # fmt: skip
    assert c.env == {}


def test_mpirun_controller_mpi_is_accepted():
    assert cmd(launcher="mpirun", controller="mpi").argv == mpi()


@pytest.mark.parametrize(
    ("knobs", "extra"),
    [
        (HorovodKnobs(fusion_threshold_mb=64), ["-x", "HOROVOD_FUSION_THRESHOLD=67108864"]),
        (HorovodKnobs(fusion_threshold_mb=0.5), ["-x", "HOROVOD_FUSION_THRESHOLD=524288"]),
        (HorovodKnobs(fusion_threshold_mb=0), ["-x", "HOROVOD_FUSION_THRESHOLD=0"]),
        (HorovodKnobs(cycle_time_ms=5.0), ["-x", "HOROVOD_CYCLE_TIME=5"]),
        (HorovodKnobs(cycle_time_ms=0.5), ["-x", "HOROVOD_CYCLE_TIME=0.5"]),
        (HorovodKnobs(cache_capacity=1024), ["-x", "HOROVOD_CACHE_CAPACITY=1024"]),
        (HorovodKnobs(hierarchical_allreduce=True), ["-x", "HOROVOD_HIERARCHICAL_ALLREDUCE=1"]),
        (HorovodKnobs(timeline="/tmp/tl.json"), ["-x", "HOROVOD_TIMELINE=/tmp/tl.json"]),
        (
            HorovodKnobs(timeline="/tmp/tl.json", timeline_mark_cycles=True),
            ["-x", "HOROVOD_TIMELINE=/tmp/tl.json", "-x", "HOROVOD_TIMELINE_MARK_CYCLES=1"],
        ),
        (HorovodKnobs(autotune=True), ["-x", "HOROVOD_AUTOTUNE=1"]),
        (
            HorovodKnobs(autotune=True, autotune_log="/tmp/at.csv"),
            ["-x", "HOROVOD_AUTOTUNE=1", "-x", "HOROVOD_AUTOTUNE_LOG=/tmp/at.csv"],
        ),
        (
            HorovodKnobs(stall_timeout_s=300),
            ["-x", "HOROVOD_STALL_CHECK_TIME_SECONDS=60", "-x", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS=300"],
        ),
        (
            HorovodKnobs(stall_timeout_s=20),
            ["-x", "HOROVOD_STALL_CHECK_TIME_SECONDS=10", "-x", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS=20"],
        ),
        (
            HorovodKnobs(network_interface="eth0"),
            ["-mca", "btl_tcp_if_include", "eth0", "-x", "NCCL_SOCKET_IFNAME=eth0"],
        ),
        (
            HorovodKnobs(network_interface="eth0,ib0"),
            ["-mca", "btl_tcp_if_include", "eth0,ib0", "-x", "NCCL_SOCKET_IFNAME=eth0,ib0"],
        ),
        (HorovodKnobs(log_level="warning"), ["-x", "HOROVOD_LOG_LEVEL=WARNING"]),
    ],
)
def test_mpirun_each_knob(knobs, extra):
    c = cmd(launcher="mpirun", knobs=knobs)
    assert c.argv == mpi(*extra)
    assert c.env == {}


def test_mpirun_interface_knobs_and_extra_env_order():
    knobs = HorovodKnobs(fusion_threshold_mb=32, cycle_time_ms=2, network_interface="ib0")
    extra_env = {"PYTHONPATH": "/work/main", "LD_LIBRARY_PATH": "/opt/lib:/usr/lib"}
    c = cmd(launcher="mpirun", np=6, hosts=TWO_HOSTS, knobs=knobs, extra_env=extra_env)
    assert c.argv == [
        "mpirun", "--tag-output", "-np", "6", "-H", "node1:4,node2:4", *OMPI,
        "-mca", "btl_tcp_if_include", "ib0",
        "-x", "NCCL_SOCKET_IFNAME=ib0",
        "-x", "HOROVOD_FUSION_THRESHOLD=33554432",
        "-x", "HOROVOD_CYCLE_TIME=2",
        "-x", "PYTHONPATH=/work/main",
        "-x", "LD_LIBRARY_PATH=/opt/lib:/usr/lib",
        *PROG,
    ]  # fmt: skip
    assert c.env == {}


def test_mpirun_exports_only_what_was_asked(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "x")
    monkeypatch.setenv("PATH", "/usr/bin")
    argv = cmd(launcher="mpirun").argv
    assert "-x" not in argv
    assert not any("SECRET_TOKEN" in a or a.startswith("PATH=") for a in argv)


def test_mpirun_large_cluster_flags():
    hosts = tuple(Host(f"n{i:03d}", 1) for i in range(64))
    argv = cmd(launcher="mpirun", np=64, hosts=hosts).argv
    h = ",".join(f"n{i:03d}:1" for i in range(64))
    assert argv == [
        "mpirun", "--tag-output", "-np", "64", "-H", h, *OMPI,
        "-mca", "plm_rsh_no_tree_spawn", "true", "-mca", "plm_rsh_num_concurrent", "64",
        *PROG,
    ]  # fmt: skip


# --- no launcher -----------------------------------------------------------------------------------------------


def test_none_is_just_the_program():
    c = cmd(launcher="none", np=1)
    assert c.argv == PROG
    assert c.env == {}


def test_none_puts_knobs_in_env():
    knobs = HorovodKnobs(
        fusion_threshold_mb=16,
        cycle_time_ms=1.5,
        cache_capacity=100,
        hierarchical_allreduce=True,
        timeline="tl.json",
        timeline_mark_cycles=True,
        autotune=True,
        autotune_log="at.csv",
        stall_timeout_s=90,
        network_interface="lo",
        log_level="trace",
    )
    c = cmd(launcher="none", np=1, knobs=knobs, extra_env={"PYTHONPATH": "."}, allow_run_as_root=True)
    assert c.argv == PROG
    assert c.env == {
        "HOROVOD_FUSION_THRESHOLD": "16777216",
        "HOROVOD_CYCLE_TIME": "1.5",
        "HOROVOD_CACHE_CAPACITY": "100",
        "HOROVOD_HIERARCHICAL_ALLREDUCE": "1",
        "HOROVOD_TIMELINE": "tl.json",
        "HOROVOD_TIMELINE_MARK_CYCLES": "1",
        "HOROVOD_AUTOTUNE": "1",
        "HOROVOD_AUTOTUNE_LOG": "at.csv",
        "HOROVOD_STALL_CHECK_TIME_SECONDS": "45",
        "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "90",
        "HOROVOD_LOG_LEVEL": "TRACE",
        "NCCL_SOCKET_IFNAME": "lo",
        "PYTHONPATH": ".",
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    }


# --- shell_line ------------------------------------------------------------------------------------------------


def test_shell_line_quotes_spaces_and_command_substitution():
    prog = ["python", "train.py", "--name", "my run", "--tag", "$(touch /tmp/pwned)"]
    c = cmd(program=prog, extra_env={"NOTE": "a b $HOME"})
    line = c.shell_line()
    assert line == (
        "NOTE='a b $HOME' horovodrun -np 2 -H localhost:2 python train.py --name 'my run' --tag '$(touch /tmp/pwned)'"
    )
    assert shlex.split(line) == ["NOTE=a b $HOME", *c.argv]


def test_shell_line_mpirun_quotes_caret():
    line = cmd(launcher="mpirun", knobs=HorovodKnobs(fusion_threshold_mb=1)).shell_line()
    assert line == (
        "mpirun --tag-output -np 2 -H localhost:2 -bind-to none -map-by slot -mca pml ob1 -mca btl '^openib' "
        "-x HOROVOD_FUSION_THRESHOLD=1048576 python -m hvdtrain.recipes.digits --epochs 3"
    )


def test_shell_line_without_env():
    assert LaunchCommand(argv=["a", "b c"], env={}).shell_line() == "a 'b c'"


# --- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("np", [0, -1, True, 2.0])
def test_bad_np(np):
    with pytest.raises(LaunchError, match="-np"):
        cmd(np=np)


def test_np_larger_than_slots():
    with pytest.raises(LaunchError, match=r"-np 9 is more than the 8 slot\(s\) on 2 host\(s\)"):
        cmd(np=9, hosts=TWO_HOSTS)


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("node1:4,node2:4", "hosts must be a list"),  # a string, not a list of Host
        ([("node1", 4)], "must be Host"),  # not Host items
        ([forged_host("", 4)], "host name is empty"),
        ([forged_host(None, 4)], "host name must be a string"),
        ([forged_host("node1", 0)], "needs slots >= 1"),
        ([forged_host("node1", True)], "needs slots >= 1"),
        ([Host("node1", 2), Host("NODE1", 2)], "listed twice"),
    ],
)
def test_bad_host_lists(hosts, message):
    with pytest.raises(LaunchError, match=message):
        cmd(hosts=hosts)


@pytest.mark.parametrize(
    "name",
    [
        "node1;rm -rf /",
        "$(reboot)",
        "`id`",
        "node1 node2",
        "node1|cat",
        "node1&",
        "node1>x",
        "-oProxyCommand=evil",
        "node1:4",
        "node1\n",
        "a..b",
        "x" * 254,
    ],
)
def test_shell_injection_host_names(name):
    with pytest.raises(ValueError):
        Host(name, 4)  # hvdtrain.hosts refuses to build it ...
    with pytest.raises(LaunchError, match="host name"):
        cmd(hosts=[forged_host(name, 4)])  # ... and build_command refuses a forged one


def test_good_host_names():
    hosts = [Host("10.0.0.1", 1), Host("gpu-node-01.cluster.local", 1), Host("gpu_02", 1)]
    assert cmd(hosts=hosts).argv == hvd(hosts="10.0.0.1:1,gpu-node-01.cluster.local:1,gpu_02:1")


@pytest.mark.parametrize("iface", ["eth0;ls", "eth 0", "$(x)", "", "eth0,", "-eth0", "eth0\n"])
@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
def test_bad_interface(iface, launcher):
    with pytest.raises(LaunchError, match="network interface"):
        cmd(launcher=launcher, knobs=HorovodKnobs(network_interface=iface))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"launcher": "mpirun", "controller": "gloo"}, "controller 'gloo' needs launcher 'horovodrun'"),
        ({"launcher": "none", "np": 1, "controller": "mpi"}, "launcher 'none'"),
        ({"launcher": "none", "np": 2}, "-np must be 1"),
        ({"launcher": "none", "np": 1, "hosts": [Host("node1", 1)]}, "leave hosts empty"),
        ({"launcher": "srun"}, "launcher must be"),
        ({"controller": "nccl"}, "controller must be"),
        ({"knobs": HorovodKnobs(timeline_mark_cycles=True)}, "timeline_mark_cycles needs timeline"),
        ({"knobs": HorovodKnobs(autotune_log="at.csv")}, "autotune_log needs autotune"),
        ({"knobs": HorovodKnobs(fusion_threshold_mb=-1)}, "fusion_threshold_mb must be >= 0"),
        ({"knobs": HorovodKnobs(cycle_time_ms=float("nan"))}, "cycle_time_ms must be a finite number"),
        ({"knobs": HorovodKnobs(cache_capacity=-5)}, "cache_capacity must be >= 0"),
        ({"knobs": HorovodKnobs(cache_capacity=1.5)}, "cache_capacity must be a whole number"),
        ({"knobs": HorovodKnobs(stall_timeout_s=0)}, "stall_timeout_s must be >= 1"),
        ({"knobs": HorovodKnobs(stall_timeout_s=2.5)}, "stall_timeout_s must be a whole number"),
        ({"knobs": HorovodKnobs(log_level="verbose")}, "log_level must be one of"),
        ({"knobs": HorovodKnobs(timeline="")}, "timeline must be a non-empty path"),
        ({"knobs": HorovodKnobs(timeline="-rf")}, "must not start with '-'"),
        ({"program": []}, "program must be a non-empty list"),
        ({"program": "python train.py"}, "program must be a non-empty list"),
        ({"program": ["--help"]}, "program must start with an executable"),
        ({"extra_env": {"BAD NAME": "1"}}, "invalid environment variable name"),
        ({"extra_env": {"X;rm": "1"}}, "invalid environment variable name"),
        ({"extra_env": {"N": 1}}, "must be a string"),
        (
            {"knobs": HorovodKnobs(cycle_time_ms=1), "extra_env": {"HOROVOD_CYCLE_TIME": "2"}},
            "extra_env sets HOROVOD_CYCLE_TIME",
        ),
        (
            {"knobs": HorovodKnobs(network_interface="ib0"), "extra_env": {"NCCL_SOCKET_IFNAME": "eth0"}},
            "extra_env sets NCCL_SOCKET_IFNAME",
        ),
    ],
)
def test_conflicts_and_bad_values(kwargs, message):
    with pytest.raises(LaunchError, match=message):
        cmd(**kwargs)


def test_launch_error_is_value_error():
    assert issubclass(LaunchError, ValueError)


def test_import_is_pure_python():
    code = "import sys, hvdtrain.launch; print(sorted({'tensorflow', 'horovod', 'keras'} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[1]  # "python -c" puts the working directory on sys.path
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- elastic -------------------------------------------------------------------------------------------------------


COOLDOWN = ["--blacklist-cooldown-range", "1", "30"]
DISCOVER = ["--host-discovery-script", str(DISCOVERY_SCRIPT)]


def test_elastic_on_localhost_goes_through_the_discovery_script_with_the_loopback_interface() -> None:
    cmd = build_command(LaunchSpec(program=PROG, np=2, elastic=Elastic(min_np=1, max_np=3)))
    assert cmd.argv == [
        "horovodrun", "-np", "2", "--min-np", "1", "--max-np", "3", *COOLDOWN, *DISCOVER,
        "--network-interfaces", "lo", *PROG,
    ]  # fmt: skip
    assert cmd.env["HVDTRAIN_ELASTIC_HOSTS"] == "localhost:3"  # horovodrun's -H would need 2 hosts or more


def test_elastic_on_two_hosts_keeps_horovodruns_fixed_hosts() -> None:
    spec = LaunchSpec(program=PROG, np=2, hosts=[Host("a", 2), Host("b", 2)], elastic=Elastic(1, 4))
    cmd = build_command(spec)
    assert cmd.argv == ["horovodrun", "-np", "2", "--min-np", "1", "--max-np", "4", *COOLDOWN, "-H", "a:2,b:2", *PROG]
    assert "HVDTRAIN_ELASTIC_HOSTS" not in cmd.env


def test_elastic_with_a_discovery_script() -> None:
    spec = LaunchSpec(program=PROG, np=4, elastic=Elastic(2, 8, "/opt/discover.sh"))
    cmd = build_command(spec)
    assert cmd.argv == ["horovodrun", "-np", "4", "--min-np", "2", "--max-np", "8", *COOLDOWN, *DISCOVER, *PROG]
    assert cmd.env["HVDTRAIN_DISCOVERY_SCRIPT"] == "/opt/discover.sh"  # run by hvdtrain's script


@pytest.mark.parametrize(
    ("listed", "printed"),
    [
        ("localhost:2", "localhost:1\n127.0.0.1:1\n"),  # one machine under two names: a lost worker is not the end
        ("localhost:5", "localhost:3\n127.0.0.1:2\n"),
        ("localhost:1", "localhost:1\n"),
        ("node1:2,node2:2", "node1:2\nnode2:2\n"),
    ],
)
def test_discovery_script_splits_a_single_local_host(listed: str, printed: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HVDTRAIN_ELASTIC_HOSTS": listed}
    assert subprocess.run([str(DISCOVERY_SCRIPT)], env=env, capture_output=True, text=True).stdout == printed


def test_discovery_script_runs_the_users_script_and_passes_its_failure_on(tmp_path: Path) -> None:
    script = tmp_path / "discover.sh"
    script.write_text("#!/bin/sh\necho localhost:2\nexit ${FAIL:-0}\n")
    script.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "HVDTRAIN_DISCOVERY_SCRIPT": str(script)}
    done = subprocess.run([str(DISCOVERY_SCRIPT)], env=env, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "localhost:1\n127.0.0.1:1\n")
    assert subprocess.run([str(DISCOVERY_SCRIPT)], env={**env, "FAIL": "3"}, capture_output=True).returncode == 3


@pytest.mark.parametrize(
    ("spec_kwargs", "message"),
    [
        ({"np": 3, "elastic": (1, 2, None)}, "--min-np <= -np <= --max-np"),
        ({"np": 2, "elastic": (1, 2, "/tmp/a b.sh")}, "may only hold letters"),
        ({"np": 2, "elastic": (1, 2, "/tmp/x;reboot")}, "may only hold letters"),
        ({"np": 2, "elastic": (1, 2, None), "launcher": "mpirun"}, "needs launcher 'horovodrun'"),
        ({"np": 2, "elastic": (1, 2, None), "controller": "mpi"}, "Gloo controller"),
        ({"np": 2, "elastic": (1, 9, None), "hosts": [Host("a", 4)]}, "--max-np 9 is more than the 4 slot(s)"),
    ],
)
def test_elastic_errors(spec_kwargs: dict, message: str) -> None:
    kwargs = dict(spec_kwargs)
    kwargs["elastic"] = Elastic(*kwargs["elastic"])
    with pytest.raises(LaunchError, match=re.escape(message)):
        build_command(LaunchSpec(program=PROG, **kwargs))
