"""Tooling for the tests, ``make demo`` (tools/transcript.py) and the benches (bench/).

- :mod:`devtools.fake_telegram`: a fake Telegram Bot API server on 127.0.0.1 that the real bot talks to;
- :mod:`devtools.samples`: generated photos and every kind of bad input a user may send;
- :mod:`devtools.bot_env`: the environment that points the bot at the fake server.

Never imported by ``bot/``, ``model/`` or ``training/``: the bot runs without it.
"""
