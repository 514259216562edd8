"""Inference as the handlers see it: ``contract.py`` (the InferenceBackend Protocol and its data types) and its two
backends, picked once by bot.app: ``local.py`` (model.serving's core on this machine's threads, on the engine
model.engines picks) and ``cluster.py`` (HTTP to a Ray Serve cluster: python -m model serve). Both draw maps with
``drawing.py``, route the canary by ``canary.py``, and reload through ``checkpoints.py``/``reload.py``."""
