"""Telegram in and out: ``commands.py`` (/start, /help, /privacy, /stats, /reload, photos and files, text), ``why.py``
(/why and its buttons), ``feedback.py`` (Right/Wrong, /forget), ``albums.py`` (one reply per album), ``request.py``
(the one wrapper every handler runs in), ``downloads.py`` and ``budget.py`` (files within MAX_FILE_BYTES and
MAX_BYTES_IN_FLIGHT), ``buttons.py`` (one codec per callback prefix, keys bound to the chat), ``telegram_io.py``
(429s, addressing in groups), ``webhook.py``/``webhook_server.py`` (webhook ingress with its secret)."""
