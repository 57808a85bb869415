"""``hvdtrain bench cluster``: hvdtrain against TensorFlow's own distributed training, across shaped links.

For each link rate, each repeat and each contender, a fresh cluster of network-namespace hosts is built
(:mod:`hvdtrain.netns`: a bridge, every link shaped with ``tc tbf`` both ways), the contender trains the synthetic
model across it, and the cluster is removed (also when the run fails or this process is stopped). Every contender
does the same work: the same model and random data, ``--batch-size`` samples per worker host and step, the same
timed batches. The chief of each job announces its timed window (:mod:`hvdtrain.bench.window`); the driver reads
the links' byte counters (the switch's ports) at its start and end, so each row has the bytes every host sent and
received per step next to the ring's theory, ``2(n-1)/n x gradient bytes`` per rank per allreduce.

Contenders (``CONTENDERS``):

- ``single``: one process on one host, no network: the reference for scaling efficiency;
- ``hvd-mpi``, ``hvd-gloo``: the synthetic recipe, one rank per host, launched by mpirun (MPI controller, TCP) or
  ``horovodrun --gloo``; at hvdtrain's defaults;
- ``hvd-mpi-fp16``, ``hvd-gloo-fp16``: with ``--fp16-allreduce``; ``hvd-mpi-nofusion``: tensor fusion off;
  ``hvd-mpi-ompi``: the allreduce algorithm left to Open MPI (with one rank on each of 3 or more hosts hvdtrain
  makes it the ring: Open MPI's own choice for 3 ranks sent 1.9x the ring's bytes over rank 0's link);
  ``hvd-mpi-bpps2``: ``--backward-passes-per-step 2``; ``hvd-mpi-hier``: 2 ranks per host (half the batch each)
  with hierarchical allreduce (measured: each host's link carries the 2-host ring's bytes, not the 4-rank ring's);
- ``mwms``: ``tf.distribute.MultiWorkerMirroredStrategy`` (RING), one worker per host, ``TF_CONFIG`` each;
- ``ps1``, ``ps2``: ``tf.distribute.ParameterServerStrategy`` with 1 or 2 parameter-server hosts, one worker per
  worker host and a coordinator host (asynchronous: each worker applies its own batch's gradients; variables are
  sharded across the servers as TensorFlow's guide does it, ``MinSizePartitioner``).

Pure Python: imports neither TensorFlow nor Horovod (the contenders run in their own processes).
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hvdtrain import netns
from hvdtrain.bench import report
from hvdtrain.bench.metrics import bus_factor
from hvdtrain.bench.runner import JobFailed, find_program, run_job, running_as_root, say
from hvdtrain.bench.window import ACK_VAR
from hvdtrain.bench.window import parse as parse_window
from hvdtrain.hosts import Host
from hvdtrain.launch import HorovodKnobs, LaunchCommand, LaunchSpec, build_command

TF_PORT = 2222
# Open MPI's fixed decision rules (its default); set, it also keeps hvdtrain from choosing the ring (tuning.py).
OPENMPI_OWN_ALGORITHM = {"OMPI_MCA_coll_tuned_use_dynamic_rules": "0"}
MB = 1e6
CSV_COLUMNS = (
    "rate_mbit",
    "model",
    "contender",
    "repeat",
    "hosts",
    "processes",
    "samples_per_sec",
    "seconds",
    "steps",
    "samples",
    "gradient_bytes",
    "worker_sent_per_step",
    "worker_received_per_step",
    "ring_theory_per_step",
    "bytes_vs_theory",
    "busiest_link_use",
    "others_cpu",
)


@dataclass(frozen=True)
class Contender:
    """How one contender runs: its kind and knobs."""

    kind: str  # single, horovod, mwms or ps
    launcher: str = "mpirun"  # horovod: mpirun or horovodrun (Gloo)
    fp16: bool = False
    fusion_off: bool = False
    backward_passes: int = 1
    ranks_per_host: int = 1
    hierarchical: bool = False
    ps_tasks: int = 0
    openmpi_algorithm: bool = False  # leave MPI_Allreduce's algorithm to Open MPI (see tuning.apply_mpi_ring)


CONTENDERS: dict[str, Contender] = {
    "single": Contender("single"),
    "hvd-mpi": Contender("horovod"),
    "hvd-mpi-fp16": Contender("horovod", fp16=True),
    "hvd-mpi-ompi": Contender("horovod", openmpi_algorithm=True),
    "hvd-mpi-nofusion": Contender("horovod", fusion_off=True),
    "hvd-mpi-bpps2": Contender("horovod", backward_passes=2),
    "hvd-mpi-hier": Contender("horovod", ranks_per_host=2, hierarchical=True),
    "hvd-gloo": Contender("horovod", launcher="horovodrun"),
    "hvd-gloo-fp16": Contender("horovod", launcher="horovodrun", fp16=True),
    "mwms": Contender("mwms"),
    "ps1": Contender("ps", ps_tasks=1),
    "ps2": Contender("ps", ps_tasks=2),
}


@dataclass(frozen=True)
class Workload:
    """The model and data every contender trains (the synthetic recipe's options)."""

    model: str = "ResNet50"
    image_size: int = 32
    batch_size: int = 16  # per worker host and step
    num_classes: int = 10
    depth: int = 100
    width: int = 64
    num_warmup_batches: int = 4
    num_batches_per_iter: int = 4  # even: --backward-passes-per-step 2 allreduces at whole iterations
    num_iters: int = 5
    threads: int | None = None  # TensorFlow threads per process [default: cores / training processes]

    def args(self, batch_size: int | None = None, threads: int = 1) -> list[str]:
        """The options shared by the synthetic recipe and hvdtrain.bench.tf_strategies."""
        args = ["--model", self.model, "--image-size", str(self.image_size)]
        args += ["--batch-size", str(batch_size or self.batch_size), "--num-classes", str(self.num_classes)]
        args += ["--num-warmup-batches", str(self.num_warmup_batches)]
        args += ["--num-batches-per-iter", str(self.num_batches_per_iter), "--num-iters", str(self.num_iters)]
        args += ["--threads", str(threads)]
        if self.model == "small-layers":
            args += ["--depth", str(self.depth), "--width", str(self.width)]
        return args


@dataclass(frozen=True)
class Layout:
    """Which hosts of the cluster do what."""

    hosts: int  # all hosts to build
    workers: tuple[int, ...]  # host indexes that train
    ps: tuple[int, ...] = ()
    coordinator: int | None = None
    processes: int = 1  # training processes (ranks or workers)


def layout(contender: Contender, hosts: int) -> Layout:
    """The hosts ``contender`` needs with ``hosts`` worker hosts: PS adds its servers and a coordinator host."""
    if contender.kind == "single":
        return Layout(1, (0,))
    if contender.kind == "ps":
        ps = tuple(range(hosts, hosts + contender.ps_tasks))
        return Layout(hosts + contender.ps_tasks + 1, tuple(range(hosts)), ps, hosts + contender.ps_tasks, hosts)
    return Layout(hosts, tuple(range(hosts)), processes=hosts * contender.ranks_per_host)


def threads_for(workload: Workload, processes: int) -> int:
    """TensorFlow threads per process: as asked, else this machine's cores shared by the training processes."""
    return workload.threads or max(1, (os.cpu_count() or 1) // processes)


def horovod_command(
    contender: Contender,
    workload: Workload,
    cluster: netns.Cluster,
    place: Layout,
    json_path: Path,
    ack: Path | None = None,
) -> LaunchCommand:
    """The synthetic recipe on every worker host, launched from host 0 (argv lists only)."""
    r = contender.ranks_per_host
    program = [sys.executable, "-m", "hvdtrain.recipes.synthetic"]
    program += workload.args(workload.batch_size // r, threads_for(workload, place.processes))
    program += ["--mark-window", "--json", str(json_path)]
    if contender.fp16:
        program.append("--fp16-allreduce")
    if contender.backward_passes > 1:
        program += ["--backward-passes-per-step", str(contender.backward_passes)]
    window_env = {} if ack is None else {ACK_VAR: str(ack)}
    if contender.kind == "single":
        command = LaunchCommand(argv=program, env=window_env)
    else:
        knobs = HorovodKnobs(
            fusion_threshold_mb=0 if contender.fusion_off else None,
            hierarchical_allreduce=contender.hierarchical,
            network_interface=netns.INTERFACE if contender.launcher == "horovodrun" else None,
        )
        spec = LaunchSpec(
            program=program,
            np=place.processes,
            hosts=[Host(cluster.hosts[i].name, r) for i in place.workers],
            launcher=contender.launcher,  # type: ignore[arg-type]
            controller="gloo" if contender.launcher == "horovodrun" else None,
            knobs=knobs,
            allow_run_as_root=running_as_root(),
            extra_env={**(OPENMPI_OWN_ALGORITHM if contender.openmpi_algorithm else {}), **window_env},
        )
        command = build_command(spec)
        launcher = find_program(command.argv[0])  # the venv's horovodrun: inside the host, PATH may lack it
        if launcher is None:
            raise JobFailed(f"{command.argv[0]} not found on PATH or in {Path(sys.executable).parent}")
        command = LaunchCommand(argv=[launcher, *command.argv[1:]], env=command.env)
    return LaunchCommand(argv=cluster.exec_argv(0, command.argv), env=command.env)


def tf_plan(
    contender: Contender, workload: Workload, cluster: netns.Cluster, place: Layout, ack: Path | None = None
) -> list[dict[str, Any]]:
    """The tasks of a MultiWorkerMirroredStrategy or ParameterServerStrategy job, one per host."""
    address = [f"{h.ip}:{TF_PORT}" for h in cluster.hosts]
    spec: dict[str, list[str]] = {"worker": [address[i] for i in place.workers]}
    roles: list[tuple[str, int, int, bool]] = [("worker", i, host, contender.kind == "ps") for i, host in
                                               enumerate(place.workers)]  # fmt: skip
    if contender.kind == "ps":
        assert place.coordinator is not None
        spec["ps"] = [address[i] for i in place.ps]
        spec["chief"] = [address[place.coordinator]]
        roles += [("ps", i, host, True) for i, host in enumerate(place.ps)]
        roles.append(("chief", 0, place.coordinator, False))
    args = workload.args(threads=threads_for(workload, place.processes))
    tasks = []
    for role, index, host, server in roles:
        tf_config = json.dumps({"cluster": spec, "task": {"type": role, "index": index}})
        program = [sys.executable, "-m", "hvdtrain.bench.tf_strategies", "--strategy", contender.kind, *args]
        tasks.append(
            {
                "name": f"{role}{index}",
                "argv": cluster.exec_argv(host, program),
                "env": {"TF_CONFIG": tf_config, **({} if ack is None else {ACK_VAR: str(ack)})},
                "server": server,
            }
        )
    return tasks


@dataclass
class WindowReader:
    """The progress callback of a run: relays the lines, reads the link counters at the window's start and end."""

    cluster: netns.Cluster
    ack: Path | None = None  # created once the start counters are read (the program waits for it)
    model: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)
    before: dict[str, netns.LinkBytes] = field(default_factory=dict)
    after: dict[str, netns.LinkBytes] = field(default_factory=dict)

    def __call__(self, text: str) -> None:
        event = parse_window(text.strip())
        if event is None:
            say(text)
            return
        if event.kind == "start":
            self.before = self.cluster.counters()
            if self.ack is not None:
                self.ack.touch()
        elif event.kind == "end":
            self.after = self.cluster.counters()
            self.end = event.fields
        else:
            self.model = event.fields
        say(text)

    def deltas(self) -> dict[str, netns.LinkBytes]:
        if not self.before or not self.after:
            raise JobFailed("the job never announced a complete timed window")
        return {name: self.after[name] - self.before[name] for name in self.after}


def ring_theory(contender: Contender, gradient_bytes: float, hosts: int) -> float | None:
    """Bytes each host's link carries each way per batch in a ring allreduce across ``hosts`` (hierarchical: the
    ranks of a host reduce locally first, then one ring runs across the hosts); None where the ring is not the
    model (parameter servers, several flat ranks per host)."""
    if contender.kind not in ("horovod", "mwms") or hosts < 2:
        return None
    if contender.ranks_per_host != 1 and not contender.hierarchical:
        return None
    return bus_factor(hosts) * gradient_bytes * (0.5 if contender.fp16 else 1.0) / contender.backward_passes


def make_row(
    name: str,
    contender: Contender,
    workload: Workload,
    cluster: netns.Cluster,
    place: Layout,
    reader: WindowReader,
    stats: Mapping[str, float | None],
) -> dict[str, Any]:
    """One run's row: throughput, bytes per step on each host's link, the ring's theory, the busiest link's use."""
    deltas = reader.deltas()
    steps, samples, seconds = (int(reader.end["steps"]), int(reader.end["samples"]), float(reader.end["seconds"]))
    params = int(reader.model.get("trainable_params", 0))
    gradient_bytes = 4 * params
    names = [h.name for h in cluster.hosts]
    workers = [names[i] for i in place.workers]
    per_step = {n: {"sent": d.sent / steps, "received": d.received / steps} for n, d in deltas.items()}
    theory = ring_theory(contender, gradient_bytes, len(place.workers))
    worker_sent = statistics.fmean(per_step[n]["sent"] for n in workers)
    worker_received = statistics.fmean(per_step[n]["received"] for n in workers)
    busiest = max(max(d.sent, d.received) for d in deltas.values())
    rate = cluster.rate_mbit
    link_time = None if rate is None else busiest * 8 / (rate * 1e6)
    return {
        "rate_mbit": rate,
        "model": workload.model,
        "contender": name,
        "kind": contender.kind,
        "hosts": len(place.workers),
        "processes": place.processes,
        "ps_tasks": len(place.ps),
        "samples_per_sec": samples / seconds,
        "seconds": seconds,
        "steps": steps,
        "samples": samples,
        "trainable_params": params,
        "gradient_bytes": gradient_bytes,
        "bytes_per_step": per_step,
        "roles": {
            "workers": workers,
            "ps": [names[i] for i in place.ps],
            "coordinator": None if place.coordinator is None else names[place.coordinator],
        },
        "worker_sent_per_step": worker_sent,
        "worker_received_per_step": worker_received,
        "ring_theory_per_step": theory,
        "bytes_vs_theory": None if theory is None else max(worker_sent, worker_received) / theory,
        "busiest_link_bytes": busiest,
        "busiest_link_use": None if link_time is None else link_time / seconds,
        "burst_bytes": cluster.burst_bytes,
        "mtu": cluster.mtu,
        "wall_s": stats.get("wall_s"),
        "others_cpu": stats.get("others_cpu"),
    }


def run_one(
    name: str,
    workload: Workload,
    hosts: int,
    rate_mbit: float | None,
    output_dir: Path,
    tag: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Build a cluster, run contender ``name`` across it, remove the cluster; the run's row."""
    contender = CONTENDERS[name]
    place = layout(contender, hosts)
    log_path = output_dir / "logs" / f"{tag}.log"
    with netns.build_cluster(place.hosts, rate_mbit) as cluster:
        ack = cluster.workdir / "window-ack"  # removed with the cluster
        if contender.kind in ("mwms", "ps"):
            plan = output_dir / "plans" / f"{tag}.json"
            plan.parent.mkdir(parents=True, exist_ok=True)
            plan.write_text(json.dumps({"tasks": tf_plan(contender, workload, cluster, place, ack)}, indent=1) + "\n")
            command = LaunchCommand([sys.executable, "-m", "hvdtrain.bench.cluster_tasks", str(plan)], {})
        else:
            json_path = output_dir / "raw" / f"{tag}.json"
            command = horovod_command(contender, workload, cluster, place, json_path, ack)
        reader = WindowReader(cluster, ack)
        stats = run_job(command, log_path, timeout_s, progress=reader, env=cluster.env())
        row = make_row(name, contender, workload, cluster, place, reader, stats)
    row["command"] = command.shell_line()
    row["log"] = str(log_path)
    return row


def run(
    names: Sequence[str],
    workload: Workload,
    hosts: int,
    rates_mbit: Sequence[float | None],
    repeats: int,
    output_dir: Path,
    label: str | None = None,
    command_line: str = "",
    timeout_s: float = 1800,
    progress: Callable[[str], None] = say,
) -> dict[str, Any]:
    """Every contender at every rate, ``repeats`` times (interleaved); write cluster.{json,csv,png}."""
    rows: list[dict[str, Any]] = []
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    total = len(rates_mbit) * repeats * len(names)
    done = 0
    for rate in rates_mbit:
        for repeat in range(1, repeats + 1):
            for name in names:
                done += 1
                where = "unshaped" if rate is None else f"{rate:g} Mbit/s"
                progress(f"[{done}/{total}] {name} on {hosts} host(s), {where}, {workload.model}, run {repeat}")
                tag = f"{'none' if rate is None else f'{rate:g}'}mbit-{name}-run{repeat}"
                try:
                    row = run_one(name, workload, hosts, rate, output_dir, tag, timeout_s)
                except JobFailed as exc:
                    raise JobFailed(f"{name} at {where}, run {repeat}: {exc}") from None
                row["repeat"] = repeat
                rows.append(row)
                use = row["busiest_link_use"]
                note = "" if use is None else f", busiest link {use:.0%} busy"
                progress(f"  -> {row['samples_per_sec']:.1f} samples/s{note}")
    document = {
        "benchmark": "cluster",
        "date": started,
        "label": label or default_label(hosts),
        "command": command_line,
        "hosts": hosts,
        "workload": asdict(workload),
        "queue_latency_ms": netns.QUEUE_LATENCY_MS,
        "rows": rows,
    }
    report.write_json(output_dir / "cluster.json", document)
    report.write_csv(output_dir / "cluster.csv", rows, CSV_COLUMNS)
    plot(rows, output_dir / "cluster.png", f"{workload.model}, {hosts} hosts - {document['label']}")
    return document


def default_label(hosts: int) -> str:
    cores = os.cpu_count()
    return f"{hosts} namespace hosts on one {cores}-core machine (all processes share its {cores} cores)"


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Median over repeats per (rate, model, contender), with the efficiency against ``single`` x hosts."""
    keys = list(dict.fromkeys((r["rate_mbit"], r["model"], r["contender"]) for r in rows))
    singles: dict[str, list[float]] = {r["model"]: [] for r in rows}
    for r in rows:
        if r["contender"] == "single":
            singles[r["model"]].append(float(r["samples_per_sec"]))
    out = []
    for rate, model, name in keys:
        mine = [r for r in rows if (r["rate_mbit"], r["model"], r["contender"]) == (rate, model, name)]
        rates = [float(r["samples_per_sec"]) for r in mine]
        median = statistics.median(rates)
        first = mine[0]
        one = statistics.median(singles[model]) if singles[model] else None
        theory = first["ring_theory_per_step"]
        out.append(
            {
                "rate_mbit": rate,
                "model": model,
                "contender": name,
                "processes": first["processes"],
                "samples_per_sec": median,
                "low": min(rates),
                "high": max(rates),
                "runs": len(mine),
                "efficiency": None if one is None or name == "single" else median / (first["hosts"] * one),
                "busiest_link_use": _median_or_none([r["busiest_link_use"] for r in mine]),
                "worker_sent_per_step": statistics.median(float(r["worker_sent_per_step"]) for r in mine),
                "worker_received_per_step": statistics.median(float(r["worker_received_per_step"]) for r in mine),
                "ps_per_step": _ps_bytes(first),
                "ring_theory_per_step": theory,
                "bytes_vs_theory": _median_or_none([r["bytes_vs_theory"] for r in mine]),
            }
        )
    return out


def _median_or_none(values: Sequence[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return statistics.median(known) if known else None


def _ps_bytes(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """Bytes all parameter servers together sent and received per step (None without servers)."""
    servers = row["roles"]["ps"]
    if not servers:
        return None
    per_step = row["bytes_per_step"]
    return sum(per_step[s]["sent"] for s in servers), sum(per_step[s]["received"] for s in servers)


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def tables(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    """One table per (rate, model): samples/s, efficiency, busiest link's use, bytes per step against the ring."""
    render = report.markdown_table if markdown else report.format_table
    summary = summarize(rows)
    headers = (
        "contender",
        "procs",
        "samples/s (min..max)",
        "eff.",
        "busiest link",
        "worker sent/recv MB per step",
        "ring theory MB",
        "measured/theory",
        "ps sent/recv MB per step",
    )
    parts = []
    for rate, model in dict.fromkeys((s["rate_mbit"], s["model"]) for s in summary):
        where = "unshaped links" if rate is None else f"{rate:g} Mbit/s links"
        body = []
        for s in summary:
            if (s["rate_mbit"], s["model"]) != (rate, model):
                continue
            spread = f"{s['samples_per_sec']:.1f} ({s['low']:.1f}..{s['high']:.1f})"
            traffic = f"{s['worker_sent_per_step'] / MB:.2f} / {s['worker_received_per_step'] / MB:.2f}"
            body.append(
                [
                    s["contender"],
                    s["processes"],
                    spread,
                    _fmt(s["efficiency"], ".2f"),
                    _fmt(s["busiest_link_use"], ".0%"),
                    traffic,
                    _fmt(s["ring_theory_per_step"], ".2f", MB),
                    _fmt(s["bytes_vs_theory"], ".3f"),
                    "-" if s["ps_per_step"] is None else "{:.2f} / {:.2f}".format(*(b / MB for b in s["ps_per_step"])),
                ]
            )
        title = f"{model}, {where}"
        parts.append(f"{title}\n\n{render(headers, body)}" if markdown else f"{title}\n{render(headers, body)}")
    return "\n\n".join(parts)


def plot(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Samples/s per contender (whiskers min..max), one panel per rate."""
    summary = summarize(rows)
    groups = []
    for rate in dict.fromkeys(s["rate_mbit"] for s in summary):
        bars = [(s["contender"], s["samples_per_sec"], s["low"], s["high"]) for s in summary if s["rate_mbit"] == rate]
        groups.append(("unshaped" if rate is None else f"{rate:g} Mbit/s", bars))
    return report.plot_bars(groups, path, title, "samples/s (all workers)")
