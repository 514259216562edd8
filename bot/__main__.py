"""``python -m bot``: run the bot (long polling, or a webhook when WEBHOOK_URL is set)."""
from bot.app import main

raise SystemExit(main())
