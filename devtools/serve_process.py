"""``python -m model serve`` in a child process, for tests and benches: a real local Ray cluster on 127.0.0.1.

:meth:`ServeProcess.start` waits for the ``inference address: ...`` line; :meth:`stop` sends SIGTERM and
reports which of the processes it saw under it (Ray's GCS, raylet, agents, replicas) outlived the stop.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from model.serve.nodes import PORT_OFFSETS, is_alive, process_tree, terminate

ADDRESS_LINE = "inference address: "
PORT_SPAN = max(PORT_OFFSETS.values()) + 2  # a node's ports: its --port and the ones after it


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def free_port_block(span: int = PORT_SPAN) -> int:
    """A first port ``p`` with p .. p+span-1 free on 127.0.0.1 now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + span < 65000 and all(_free(base + offset) for offset in range(span)):
            return base
    raise RuntimeError("no free block of ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def write_token(path: Path, token: str) -> Path:
    path.write_text(token)
    path.chmod(0o600)
    return path


@dataclass
class ServeProcess:
    """One ``python -m model serve`` (a head, or a node joining one with ``join=``)."""

    checkpoint: Path
    token_file: Path
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    join: str | None = None
    port: int = 0
    http_port: int = 0
    process: subprocess.Popen | None = None
    address: str = ""
    seen: set[int] = field(default_factory=set)  # every pid seen under it while it ran

    def start(self, timeout: float = 240.0, env: dict[str, str] | None = None) -> ServeProcess:
        self.port = self.port or free_port_block()
        self.http_port = self.http_port or (0 if self.join else free_port_block(1))
        command = [sys.executable, "-m", "model", "serve", "--checkpoint", str(self.checkpoint),
                   "--port", str(self.port), "--worker-ports", f"{self.port + PORT_SPAN}-{self.port + PORT_SPAN + 200}",
                   *self.extra_args]
        command += ["--join", self.join] if self.join else ["--http-port", str(self.http_port)]
        environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                       "RAY_AUTH_TOKEN_PATH": str(self.token_file), **(env or {})}
        for inherited in ("RAY_AUTH_TOKEN", "INFERENCE_TOKEN", "INFERENCE_TOKEN_FILE"):
            environment.pop(inherited, None)
        environment.update(env or {})
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, env=environment)
        found = threading.Event()

        def read_stdout() -> None:
            for line in self.process.stdout:
                text = line.decode(errors="replace").strip()
                if text.startswith(ADDRESS_LINE):
                    self.address = text[len(ADDRESS_LINE):]
                    found.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        if self.join:
            return self
        deadline = time.monotonic() + timeout
        while not found.wait(0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"python -m model serve did not start (see {self.log_path}):\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
        return self

    @property
    def inference_token_file(self) -> Path:
        """The gateway's token (not Ray's): the file the head creates beside ``token_file``."""
        return self.token_file.with_name("inference_token")

    def tree(self) -> set[int]:
        """Its processes now (remembered for :meth:`stop`'s check)."""
        pids = process_tree(self.process.pid) if self.process is not None else set()
        self.seen |= pids
        return pids

    def replicas(self, deployment: str) -> list[int]:
        """Pids of its replica processes of ``deployment`` (Ray titles them ``ray::ServeReplica:APP:NAME``, with
        ``.METHOD`` appended while one runs a request)."""
        return [pid for pid in self.tree() if process_title(pid).startswith("ray::ServeReplica:")
                and process_title(pid).split(":")[-1].split(".")[0] == deployment]

    def stop(self, timeout: float = 60.0) -> list[str]:
        """SIGTERM and wait; the processes seen under it that are still alive (should be none)."""
        if self.process is None:
            return []
        self.tree()
        terminate(self.process, timeout)
        self._log.close()
        left = [f"{pid} {process_title(pid)}" for pid in sorted(self.seen) if is_alive(pid)]
        return left
