"""The serving core, shared by the bot's in-process backend and the cluster's replicas (no torch, no Ray, no bot):

- :mod:`.admission`: queue limits, per-chat limits and the heat-map fair share; :class:`Busy`, :class:`Stopping`;
- :mod:`.batching`: which waiting classifications run together, and when (pure, with an explicit ``now``);
- :mod:`.jobs`: heat-map jobs and their queue, coarse maps before fine ones, chats taking turns;
- :mod:`.lru`: the one bounded, thread-safe LRU cache type;
- :mod:`.levels`: one heat-map level of a model (hash, decode, skip the coarse map when the fine one is cached,
  cache, explain);
- :mod:`.scheduler`: the compute threads that drive a :class:`model.engine.ServingEngine` by those rules.

The bot's local backend (:mod:`bot.inference.local`) and a cluster replica (:mod:`model.serve.replica`) both run
:class:`.scheduler.Scheduler`, so their behaviours cannot diverge.
"""
