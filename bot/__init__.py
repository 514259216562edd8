"""The Telegram bot (``python -m bot``). Its folders are its architecture:

- ``app.py``: the composition root: settings -> the Application with every handler registered, the services
  started and stopped with it, and the ONE place that picks the inference backend (``backend_for``).
- ``config.py``: every setting, declared once (``model.settings``); ``settings_docs.py`` writes .env.example and
  the README's table from the declarations.
- ``handlers/``: Telegram in and out: one async function per kind of update (commands, photos and files,
  albums, /why, the feedback buttons), the one request wrapper, downloads within their limits, the button
  codecs, webhook ingress.
- ``inference/``: the contract the handlers see (``contract.py``: :class:`~bot.inference.contract.InferenceBackend`)
  and its two backends: ``local.py`` (the serving core of ``model.serving`` in this process) and ``cluster.py``
  (the gateway to a Ray Serve cluster); maps drawn in the user's language (``drawing.py``), canary routing, reload.
- ``state/``: what is kept on disk: the photo store, the journal of accepted requests, retention, feedback records.
- ``ops/``: what operators read: logs (secrets redacted), /stats, Prometheus metrics, /livez and /readyz, the
  systemd watchdog.
- ``messages.py``, ``i18n.py``, ``locale/``: every user-facing text, and its translations.

docs/architecture.md follows a photo and a /why through these.
"""
