"""This machine's Ray node: ``ray start --block`` with token auth and fixed ports, and stopping every process
it started (see :mod:`model.serve.cluster` for why, and docs/scaling.md for the ports)."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import wire

log = logging.getLogger("model.serve")

STOP_GRACE_S = 15.0
# Ray's other ports, from each node's --port: node manager, object manager, the two dashboard-agent ports,
# metrics export and the runtime-env agent (fixed, so a firewall can name them; docs/scaling.md).
PORT_OFFSETS = {"--node-manager-port": 1, "--object-manager-port": 2, "--dashboard-agent-listen-port": 3,
                "--dashboard-agent-grpc-port": 4, "--metrics-export-port": 5, "--runtime-env-agent-port": 6}

@dataclass
class RayNode:
    """The ``ray start --block`` process of this machine's node, and its environment."""

    process: subprocess.Popen
    gcs_address: str


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def ray_environment(host: str, head: bool, token_file: Path | None) -> dict[str, str]:
    """The environment Ray's processes start with: token auth on, the token by file or variable, never argv."""
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "token"
    if token_file is not None:
        env[wire.TOKEN_PATH_ENV] = str(token_file)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if head and _is_loopback(host):
        # Ray replaces a loopback node address with this machine's outward one, and its servers then listen on
        # every interface; with its single-machine mode (what macOS gets) everything stays on 127.0.0.1.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def start_ray_node(args: argparse.Namespace, token_file: Path | None) -> RayNode:
    port = args.port or (6390 if args.join else 6379)
    launch = "from ray.scripts.scripts import main; main()"
    if args.join and _is_loopback(args.join.rsplit(":", 1)[0]):
        # A second node on the head's machine (the head on 127.0.0.1): `ray start` would swap 127.0.0.1 for this
        # machine's outward address, where a loopback head does not listen. Keep the address as given.
        launch = "import ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; " + launch
    command = [sys.executable, "-c", launch, "start", "--block",
               "--disable-usage-stats", "--min-worker-port",
               args.worker_ports.split("-")[0], "--max-worker-port", args.worker_ports.split("-")[1]]
    for flag, offset in PORT_OFFSETS.items():
        command += [flag, str(port + offset)]
    if args.join:
        command += ["--address", args.join]
        gcs = args.join
    else:
        command += ["--head", "--include-dashboard=false", "--port", str(port),
                    "--ray-client-server-port", str(port + max(PORT_OFFSETS.values()) + 1)]
        gcs = f"{args.host}:{port}"
    if not _is_loopback(args.host):
        command += ["--node-ip-address", args.host]
    if args.cpus is not None:
        command += ["--num-cpus", str(args.cpus)]
    if args.gpus is not None:
        command += ["--num-gpus", str(args.gpus)]
    # Its own session, so a Ctrl-C in the terminal reaches only us and we stop it in order; and told to stop
    # (SIGTERM) by the kernel should this process die first.
    process = subprocess.Popen(command, env=ray_environment(args.host, not args.join, token_file),
                               stdout=sys.stderr, stderr=sys.stderr, stdin=subprocess.DEVNULL, start_new_session=True,
                               preexec_fn=_terminate_with_parent)
    return RayNode(process, gcs)


def _terminate_with_parent() -> None:
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def process_tree(pid: int) -> set[int]:
    """``pid`` and its descendants now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(children.get(current, []))
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def terminate(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, and SIGKILL if ``process`` has not exited ``grace_s`` seconds later; returns once it has exited."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_ray_node(node: RayNode) -> None:
    """SIGTERM to ``ray start --block`` (it stops the processes it started), then SIGKILL to any leftover."""
    tree = process_tree(node.process.pid)
    terminate(node.process, STOP_GRACE_S)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        tree = {pid for pid in tree | process_tree(node.process.pid) if pid != os.getpid() and is_alive(pid)}
        if not tree:
            return
        time.sleep(0.2)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    log.warning("killed %d Ray process(es) that outlived the stop", len(tree))


