"""What operators read: ``logging_setup.py`` (one format, secrets redacted everywhere), ``stats.py`` (/stats and the
request log line), ``metrics.py`` (Prometheus families), ``metrics_server.py`` (/metrics, /livez, /readyz), ``health.py``
(liveness, readiness and the systemd watchdog)."""
