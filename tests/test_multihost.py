"""A real multi-host run: the digits recipe on two "hosts" over TCP, and both ranks end with identical weights.

The hosts are two network namespaces joined by a veth pair (tests/multihost.py). The hostfile is written with
``hvdtrain.hosts.format_hostfile``, the ``mpirun`` command line comes from ``hvdtrain.launch.build_command``, and
Open MPI is pointed at the hosts with OMPI_MCA_* environment variables only: an rsh agent that "logs in" to a
namespace instead of ssh, and TCP confined to the test subnet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from multihost import can_make_namespaces, list_namespaces, run_bounded, two_hosts

from hvdtrain.hosts import Host, format_hostfile, parse_hostfile
from hvdtrain.launch import LaunchSpec, build_command

pytestmark = pytest.mark.multiproc

REPO = Path(__file__).resolve().parents[1]
PREFIX = "hvdtmh"
RUN_TIMEOUT_S = 300
EPOCHS = 2
NETNS_DIR = Path("/var/run/netns")

# Runs on every rank: trains the digits recipe and saves what the test compares.
WORKER = textwrap.dedent(
    '''
    """Train digits on this rank, then save its final weights and where it ran to OUT/rank-<rank>.npz."""

    import json
    import os
    import socket
    import subprocess
    import sys

    import numpy as np

    from hvdtrain.recipe import train
    from hvdtrain.recipes.digits import recipe

    out_dir, ip_command, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = recipe.defaults.with_overrides({"epochs": epochs, "warmup_epochs": epochs / 2})
    result = train(recipe, config)
    links = json.loads(
        subprocess.run([ip_command, "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=30,
                       check=True).stdout
    )
    addresses = sorted(a["local"] for link in links if link["ifname"] != "lo" for a in link.get("addr_info", []))
    np.savez(
        os.path.join(out_dir, f"rank-{result.world.rank}.npz"),
        weights=np.concatenate([w.ravel() for w in result.model.get_weights()]),
        rank=result.world.rank,
        size=result.world.size,
        local_size=result.world.local_size,
        accuracy=result.test_metrics["accuracy"],
        hostname=socket.gethostname(),
        netns=os.readlink("/proc/self/ns/net"),
        addresses=np.array(addresses, dtype=str),
    )
    '''
)


@pytest.fixture(scope="module")
def mpirun() -> str:
    """Open MPI's mpirun, or skip with the reason the two hosts cannot be made here."""
    reason = can_make_namespaces()
    if reason is not None:
        pytest.skip(reason)
    path = shutil.which("mpirun")
    if path is None:
        pytest.skip("mpirun is not installed (the multi-host test needs Open MPI)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=False)
    if "Open MPI" not in version.stdout + version.stderr:
        pytest.skip("mpirun is not Open MPI's (the multi-host test sets Open MPI's OMPI_MCA_* variables)")
    return path


def netns_inode(namespace: str) -> str:
    """``net:[INODE]`` of a named namespace, as ``readlink /proc/PID/ns/net`` shows it for a process inside."""
    return f"net:[{(NETNS_DIR / namespace).stat().st_ino}]"


def test_digits_trains_in_sync_on_two_hosts(tmp_path: Path, mpirun: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    ip_command = shutil.which("ip", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    assert ip_command is not None

    with two_hosts(PREFIX) as hosts:
        hostfile = tmp_path / "hostfile"
        hostfile.write_text(format_hostfile([Host(ip, 1) for ip in hosts.ips]))
        assert hostfile.read_text() == f"{hosts.ips[0]} slots=1\n{hosts.ips[1]} slots=1\n"

        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        command = build_command(
            LaunchSpec(
                program=[sys.executable, str(worker), str(out), ip_command, str(EPOCHS)],
                np=2,
                hosts=parse_hostfile(hostfile),
                launcher="mpirun",
                allow_run_as_root=os.geteuid() == 0,
                extra_env={"PYTHONPATH": pythonpath, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
        )
        assert command.argv[0] == "mpirun"
        argv = hosts.exec_argv(0, [mpirun, *command.argv[1:]])
        env = {**os.environ, **command.env, **hosts.mpi_env()}
        status, output = run_bounded(argv, env=env, timeout=RUN_TIMEOUT_S, cwd=REPO)
        tail = output[-6000:]
        assert status is not None, f"mpirun did not finish in {RUN_TIMEOUT_S} s:\n{tail}"
        assert status == 0, f"mpirun exited with {status}:\n{tail}"

        inodes = [netns_inode(ns) for ns in hosts.namespaces]
        traffic = [hosts.link_bytes(i) for i in range(2)]
        agent_calls = hosts.agent_calls()

    # The hosts are gone, also from the file system.
    left = set(hosts.namespaces) & set(list_namespaces())
    assert not left, f"namespaces left behind: {sorted(left)}"
    assert not any((NETNS_DIR / ns).exists() for ns in hosts.namespaces)
    assert not hosts.agent.exists()

    # mpirun ran on the first host and reached the second only through the rsh agent.
    assert [call[0] for call in agent_calls] == [hosts.ips[1]], agent_calls
    assert "orted" in " ".join(agent_calls[0])

    assert sorted(out.iterdir()) == [out / "rank-0.npz", out / "rank-1.npz"], tail
    ranks = [np.load(out / f"rank-{rank}.npz") for rank in range(2)]
    for rank, saved in enumerate(ranks):
        assert int(saved["rank"]) == rank
        assert int(saved["size"]) == 2
        assert int(saved["local_size"]) == 1, "Open MPI saw both ranks on one node"
        # Rank r ran inside host r's namespace, which has only host r's address.
        assert str(saved["netns"]) == inodes[rank]
        assert list(saved["addresses"]) == [hosts.ips[rank]]
    assert inodes[0] != inodes[1]

    # Gradients were allreduced across the veth: each host sent and received many model-sized messages.
    model_bytes = ranks[0]["weights"].nbytes
    for host, (received, sent) in enumerate(traffic):
        assert sent > 10 * model_bytes and received > 10 * model_bytes, (host, traffic, model_bytes)

    # Trained in sync: bit-identical final weights and the same (good) test accuracy on both ranks.
    np.testing.assert_array_equal(ranks[0]["weights"], ranks[1]["weights"])
    assert float(ranks[0]["accuracy"]) == float(ranks[1]["accuracy"])
    assert float(ranks[0]["accuracy"]) > 0.5, tail
    assert f"Epoch {EPOCHS}/{EPOCHS}" in output, tail
