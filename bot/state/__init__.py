"""What the bot keeps on disk, in DATA_DIR and FEEDBACK_DIR: ``store.py`` (last photo per chat, button keys, answers),
``journal.py`` (accepted requests, until answered; the poison-pill rule), ``retention.py`` (RETENTION_DAYS),
``feedback_records.py`` (the users' judgements, through model.inbox)."""
