"""Reload on the cluster: one named Ray actor, the **checkpoint registry**, holds a generation number and the
checkpoint ids the replicas should serve; replicas poll it and acknowledge.

1. ``/reload`` (or the bot's SIGHUP) reaches one Classifier replica as a POST with ``X-Reload``. It reads the
   checkpoint files again (``--checkpoint``, ``--canary-checkpoint``: the paths every machine reads) by the bot's
   rules: safe load, probe pass, prepared as it will serve. A bad file: refused, nothing changes anywhere.
2. Otherwise it swaps them in itself and raises the generation, with the new checkpoint ids
   (:meth:`CheckpointRegistry.propose`).
3. Every other replica polls the registry (every :data:`POLL_S`); at a new generation it loads and prepares the
   files on a side thread while its old engines serve, checks that it got the ids asked for, swaps them in
   (work in flight finishes on the model it started with), and acknowledges, ok or not.
4. The first replica waits until every running replica has acknowledged (or :data:`ACK_WAIT_S`), and answers
   with one line per outcome. A replica started after a reload reads the current generation at start.

An actor, not Serve's own redeploy: a redeploy replaces the replicas (their requests in flight are drained
into new processes that load from scratch), and the replica that validated the file would not be the one
answering. The registry holds a few strings and ints, and is detached so a driver restart keeps it.
"""
from __future__ import annotations

import ray

REGISTRY_NAME, REGISTRY_NAMESPACE = "checkpoint_registry", "model_serve"
POLL_S = 1.0
ACK_WAIT_S = 240.0


@ray.remote(num_cpus=0)
class CheckpointRegistry:
    def __init__(self) -> None:
        self.generation = 0
        self.expected: dict[str, str] = {}  # model name -> checkpoint id, as of the generation
        self.acks: dict[str, tuple[int, bool, str]] = {}  # replica -> (generation, ok, one line)

    def current(self) -> tuple[int, dict[str, str]]:
        return self.generation, dict(self.expected)

    def propose(self, expected: dict[str, str]) -> int:
        self.generation += 1
        self.expected = dict(expected)
        return self.generation

    def ack(self, replica: str, generation: int, ok: bool, text: str) -> None:
        self.acks[replica] = (generation, ok, text)

    def acks_for(self, generation: int) -> dict[str, tuple[bool, str]]:
        return {replica: (ok, text) for replica, (seen, ok, text) in self.acks.items() if seen == generation}


def create_registry():
    """The cluster's registry (made by ``python -m model serve`` before it deploys; kept if it exists)."""
    return CheckpointRegistry.options(name=REGISTRY_NAME, namespace=REGISTRY_NAMESPACE, lifetime="detached",
                                      get_if_exists=True).remote()


def registry():
    return ray.get_actor(REGISTRY_NAME, namespace=REGISTRY_NAMESPACE)
