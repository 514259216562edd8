"""``python -m model serve``: a Ray cluster on this machine with the ``Classifier`` and ``Explainer``
deployments (or, with ``--join``, this machine's CPUs and GPUs added to a running one), in the foreground.

Processes: this one (the Ray driver that deploys, then waits for a signal) and ``ray start --block``, whose
children are Ray's own (GCS, raylet, agents, replica workers). SIGINT/SIGTERM: Serve is shut down, the
driver disconnects, ``ray start`` is told to stop its processes, and whatever of its process tree is still
there after a grace period is killed, so no Ray process is left behind.

Security (docs/scaling.md): Ray runs whatever code its clients send, so token authentication is always on
(RAY_AUTH_MODE=token). The token comes from RAY_AUTH_TOKEN or the file RAY_AUTH_TOKEN_PATH (default
~/.ray/auth_token, created with mode 0600 on the head when missing), reaches Ray's processes through
their environment, and is never put on a command line or in a log. The gateway's HTTP requests carry
another token, the inference token (INFERENCE_TOKEN, or the file INFERENCE_TOKEN_FILE, default
``inference_token`` beside Ray's file, created with mode 0600 on the head when missing): it opens the two
routes and nothing else, so the bot's machine never holds Ray's. The dashboard is off. On 127.0.0.1
(the default) every Ray port listens on loopback only; on another address Ray 2.60's gRPC servers listen
on all interfaces whatever the node address (docs/scaling.md: a firewall must close all but the listed ports).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..settings import ComputeSettings, add_flag
from . import wire
from .nodes import PORT_OFFSETS, ray_environment, start_ray_node, stop_ray_node

log = logging.getLogger("model.serve")

STARTUP_TIMEOUT_S = 300.0  # replicas load the checkpoint; a loaded 2-core machine is slow
CLASSIFY_APP, EXPLAIN_APP = "classifier", "explainer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint, readable on every machine")
    parser.add_argument("--canary-checkpoint", type=Path, default=None, metavar="FILE",
                        help="a candidate model the replicas serve beside the main one, for the share of chats the bot "
                             "routes to it (CANARY_SHARE); readable on every machine")
    parser.add_argument("--join", metavar="ADDRESS", default=None,
                        help="join the cluster whose head printed 'join address: ADDRESS' instead of starting one")
    parser.add_argument("--classify-replicas", type=int, default=1, metavar="N")
    parser.add_argument("--explain-replicas", type=int, default=1, metavar="N")
    for name in ("device", "precision"):  # declared once with the bot's settings (model/settings.py)
        add_flag(parser, ComputeSettings, name, help_prefix="auto device: replicas reserve a GPU when the cluster has one; "
                 if name == "device" else "")
    parser.add_argument("--host", default="127.0.0.1",
                        help="this machine's address for Ray and the inference endpoint (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None,
                        help="this node's first Ray port (head: the GCS, default 6379; joining: default 6390); "
                             f"the next {max(PORT_OFFSETS.values())} are its other Ray ports")
    parser.add_argument("--http-port", type=int, default=8000, help="the inference endpoint's port (head only)")
    parser.add_argument("--worker-ports", default="10002-10999", metavar="MIN-MAX",
                        help="ports of this node's Ray worker processes (default: %(default)s)")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs this machine gives Ray (default: all)")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs this machine gives Ray (default: all)")
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs each replica reserves (may be fractional)")
    for name in ("max_batch", "max_batch_wait_ms", "why_batch_size", "explain_cache_size"):
        add_flag(parser, ComputeSettings, name)
    parser.add_argument("--max-queued", type=int, default=64,
                        help="requests waiting per deployment before the cluster answers busy (503)")


def probe(url: str, token: str, timeout: float = 5.0) -> dict | None:
    """GET ``url`` with the token: its JSON, or None while it does not answer."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def deploy(args: argparse.Namespace, gcs_address: str) -> None:
    """Connect as a driver and deploy both applications (returns before their replicas are all up)."""
    import ray
    from ray import serve

    from .deployments import ClassifierDeployment, ExplainerDeployment, ReplicaOptions
    from .registry import create_registry

    for _ in range(120):  # the GCS takes a few seconds to come up
        try:
            ray.init(address=gcs_address, logging_level=logging.WARNING, log_to_driver=False)
            break
        except (ConnectionError, RuntimeError):
            time.sleep(1)
    else:
        raise RuntimeError(f"the Ray head at {gcs_address} did not come up")
    gpus = ray.cluster_resources().get("GPU", 0) if args.device == "auto" else (1 if args.device == "cuda" else 0)
    options = ReplicaOptions(checkpoint=str(args.checkpoint.resolve()), device="cuda" if gpus else args.device,
                             precision=args.precision, threads=max(1, round(args.replica_cpus)),
                             max_batch=args.max_batch, max_batch_wait_s=args.max_batch_wait_ms / 1000,
                             explain_batch_size=args.why_batch_size, explain_cache_size=args.explain_cache_size,
                             canary_checkpoint=str(args.canary_checkpoint.resolve()) if args.canary_checkpoint else None)
    create_registry()  # before the replicas, which read its generation at start (model.serve.registry)
    actor_options = {"num_cpus": args.replica_cpus, "num_gpus": 1 if gpus else 0}
    serve.start(proxy_location="HeadOnly", http_options={"host": args.host, "port": args.http_port})
    for app, deployment, replicas, route in ((CLASSIFY_APP, ClassifierDeployment, args.classify_replicas,
                                              wire.CLASSIFY_ROUTE),
                                             (EXPLAIN_APP, ExplainerDeployment, args.explain_replicas, wire.EXPLAIN_ROUTE)):
        bound = deployment.options(num_replicas=replicas, ray_actor_options=actor_options,
                                   max_queued_requests=args.max_queued).bind(options)
        serve._run(bound, name=app, route_prefix=route, _blocking=False)  # not blocking: replicas may wait for nodes


def wait_until_answering(endpoint: str, token: str, stop: threading.Event) -> dict | None:
    """Both deployments' info once each answers (at least one replica up), or None if stopped first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        info = probe(endpoint + wire.CLASSIFY_ROUTE, token)
        if info is not None and probe(endpoint + wire.EXPLAIN_ROUTE, token) is not None:
            return info
        stop.wait(1.0)
    if not stop.is_set():
        raise RuntimeError(f"the deployments did not answer within {STARTUP_TIMEOUT_S:.0f} s")
    return None


def resolve_token(join: bool) -> Path | None:
    """The token file Ray's processes read (None when RAY_AUTH_TOKEN carries it); created on a head."""
    if os.environ.get(wire.TOKEN_ENV):
        return None
    path = wire.token_path()
    if not join and wire.ensure_token_file(path):
        log.info("a new cluster token was written to %s (mode 0600): copy it to the other machines and the bot", path)
    wire.read_token_file(path)  # refuses a missing, empty or world-readable file now, not in Ray's processes
    return path


def resolve_inference_token(join: bool) -> str:
    """The inference token (created beside Ray's on a head when missing); its file goes in the environment
    Ray's processes start with, so that the replicas on this node read it there."""
    if os.environ.get(wire.INFERENCE_TOKEN_ENV, "").strip():
        return wire.inference_token()
    path = wire.inference_token_path()
    if not join and wire.ensure_token_file(path):
        log.info("a new inference token was written to %s (mode 0600)", path)
    elif join and not path.exists():
        raise wire.TokenError(f"no inference token at {path}: copy the head's file there (mode 0600), "
                              f"or set {wire.INFERENCE_TOKEN_PATH_ENV}")
    token = wire.inference_token()
    os.environ[wire.INFERENCE_TOKEN_PATH_ENV] = str(path)
    return token


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.classify_replicas < 1 or args.explain_replicas < 1:
        print("error: --classify-replicas and --explain-replicas must be at least 1", file=sys.stderr)
        return 2
    if not args.join and not args.checkpoint.is_file():
        print(f"error: no checkpoint at {args.checkpoint}", file=sys.stderr)
        return 2
    if not args.join and args.canary_checkpoint is not None and not args.canary_checkpoint.is_file():
        print(f"error: no canary checkpoint at {args.canary_checkpoint}", file=sys.stderr)
        return 2
    try:
        token_file = resolve_token(bool(args.join))
        wire.cluster_token()
        token = resolve_inference_token(bool(args.join))  # the HTTP routes' token: not Ray's
    except wire.TokenError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Before Ray is imported: this process is a Ray client too, and reads these once.
    os.environ.update({key: value for key, value in ray_environment(args.host, not args.join, token_file).items()
                       if key.startswith("RAY_")})
    stop = threading.Event()

    def stop_on_signals() -> None:  # again after ray.init, whose own handler for SIGTERM ends the process
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())

    stop_on_signals()
    started = time.monotonic()
    node = start_ray_node(args, token_file)
    try:
        if args.join:
            log.info("joining the cluster at %s with this machine's resources", args.join)
            while not stop.is_set() and node.process.poll() is None:
                stop.wait(0.5)
        else:
            deploy(args, node.gcs_address)
            stop_on_signals()
            endpoint = f"http://{args.host}:{args.http_port}"
            info = wait_until_answering(endpoint, token, stop)
            if info is not None:
                log.info("join address: %s; serving checkpoint %s (%s) after %.1f s", node.gcs_address,
                         info["checkpoint_id"][:12], ", ".join(info["class_names"]), time.monotonic() - started)
                where = os.environ.get(wire.INFERENCE_TOKEN_PATH_ENV) or f"${wire.INFERENCE_TOKEN_ENV}"
                log.info("the bot's INFERENCE_TOKEN_FILE: a copy of %s (not Ray's token); its INFERENCE_ADDRESS: "
                         "this address on this machine, else https:// through a TLS proxy", where)
                print(f"inference address: {endpoint}", flush=True)
            while not stop.is_set() and node.process.poll() is None:
                stop.wait(0.5)
        if node.process.poll() is not None and not stop.is_set():
            log.error("ray start exited with status %s", node.process.returncode)
            return 1
        return 0
    finally:
        log.info("stopping")
        if not args.join:
            _shutdown_serve()
        stop_ray_node(node)
        log.info("stopped")


def _shutdown_serve() -> None:
    import ray

    if not ray.is_initialized():
        return
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # the cluster is going away anyway; the process tree is stopped next
        log.exception("serve.shutdown failed")
    ray.shutdown()
