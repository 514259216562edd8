"""sd_notify's one datagram and the watchdog's interval (bot/ops/health.py), without a bot."""
import os
import socket

from bot.ops.health import sd_notify, watchdog_interval_s
from bot.ops.metrics import outcome_of


def test_sd_notify_sends_one_datagram_to_the_socket_it_is_given(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        systemd.settimeout(5)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": path})
        assert systemd.recv(100) == b"READY=1"


def test_sd_notify_reaches_an_abstract_socket():
    name = f"productbot-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(5)
        assert sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert systemd.recv(100) == b"WATCHDOG=1"


def test_sd_notify_without_systemd_or_with_a_gone_socket_is_a_quiet_no(tmp_path):
    assert not sd_notify("READY=1", {})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})


def test_the_watchdog_pings_at_half_its_interval_and_only_for_its_own_process():
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({}) is None and watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None


def test_outcome_labels():
    assert outcome_of("answered", True) == ("answered", "")
    assert outcome_of("answered", True, unsure=True) == ("unsure", "")
    assert outcome_of("too_large", False) == ("refused", "too_large")
    assert outcome_of("download_failed", False) == ("failed", "download_failed")
    assert outcome_of("busy", False) == ("busy", "")
    assert outcome_of("deferred", False) == ("deferred", "")
    assert outcome_of("hint", False) == ("replied", "")
