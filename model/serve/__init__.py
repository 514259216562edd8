"""Serving the model on a Ray Serve cluster: ``python -m model serve`` (see docs/scaling.md).

Only :mod:`model.serve.wire` (the HTTP protocol, no torch, no Ray) is imported by the bot's gateway; the
rest imports Ray and is loaded only by ``python -m model serve`` and the cluster's replicas, so the default
install (without the ``cluster`` extra) never needs Ray.
"""
