"""The bot as a gateway to a real local Ray Serve cluster (``python -m model serve`` on 127.0.0.1): answers,
streamed heat maps, a replica killed mid-/why, a second node joining, the token, webhook ingress, a cluster
restart, and no process left behind. One cluster for the module (starting one takes tens of seconds here).
"""
from __future__ import annotations

import asyncio
import http.client
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from e2e_support import assert_prediction, expected_prediction, open_picture
from webhook_support import free_port, local_webhook, webhook_settings

from devtools.samples import jpeg
from devtools.serve_process import ServeProcess, process_title, write_token
from model.serve.nodes import PORT_OFFSETS

pytest.importorskip("ray", reason="the cluster tests need the cluster extra (make test installs it)")
pytestmark = pytest.mark.timeout(400)

# Replicas reserve a quarter of a CPU each, so the head's 1 CPU holds the Classifier and one Explainer; the
# second Explainer waits for a node to join.
HEAD_ARGS = ["--cpus", "1", "--replica-cpus", "0.4", "--classify-replicas", "1", "--explain-replicas", "2",
             "--max-batch-wait-ms", "5"]
FINE_MAP = {"WHY_PATCH": "32", "WHY_STRIDE": "16"}  # 13 x 13 positions: long enough to be killed halfway


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    return write_token(tmp_path_factory.mktemp("token") / "auth_token", "cluster-test-token-" + os.urandom(8).hex())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_checkpoint, token_file):
    logs = tmp_path_factory.mktemp("cluster")
    head = ServeProcess(tiny_checkpoint, token_file, logs / "head.log", HEAD_ARGS).start()
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture
def gateway_env(cluster):
    return {"INFERENCE_ADDRESS": cluster.address, "INFERENCE_TOKEN_FILE": str(cluster.inference_token_file), **FINE_MAP}


async def ask(fake_api, update: dict, timeout: float = 60):
    update = await fake_api.push(update)
    return update, await fake_api.wait_for_answer(update["message"], timeout=timeout)


async def why_maps(fake_api, chat_id: int, mark: int, timeout: float = 120):
    """The coarse map (sendPhoto) and the fine map edited into it (editMessageMedia)."""
    coarse = await fake_api.wait_for_call("sendPhoto", lambda c: c.chat_id == chat_id, after=mark, timeout=timeout)
    fine = await fake_api.wait_for_call("editMessageMedia", lambda c: c.params.get("chat_id") == chat_id,
                                        after=mark, timeout=timeout)
    return coarse, fine


async def test_photo_and_streamed_why_through_the_cluster_by_webhook(fake_api, running_bot, gateway_env, classifier,
                                                                     cluster):
    port = free_port()
    async with running_bot(webhook=True, **gateway_env, **webhook_settings(port), ADMIN_USER_IDS="1001",
                           METRICS_PORT="0") as app:
        assert app.bot_data["services"].classifier.checkpoint_id == classifier.checkpoint_id  # from the cluster
        fake_api.proxy_webhook_to(local_webhook(port))
        photo = jpeg(seed=5)
        update, answer = await ask(fake_api, fake_api.photo_update(photo, chat_id=1001, user_id=1001))
        assert_prediction(answer, expected_prediction(classifier, photo))
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why", chat_id=1001, reply_to=update["message"]))
        coarse, fine = await why_maps(fake_api, 1001, mark)
        assert coarse.at < fine.at
        assert min(open_picture(coarse.photo_bytes).size) >= 200 and min(open_picture(fine.photo_bytes).size) >= 200
        assert open_picture(coarse.photo_bytes).tobytes() != open_picture(fine.photo_bytes).tobytes()
        _, stats = await ask(fake_api, fake_api.command_update("/stats", chat_id=1001, user_id=1001))
        assert "Classifier 1" in stats.text and "Explainer" in stats.text, stats.text
        # The gateway serves /readyz (its webhook is set, the cluster answers) and /metrics.
        metrics_url = f"http://127.0.0.1:{app.metrics_server.port}"
        assert (await asyncio.to_thread(http_get, metrics_url + "/readyz"))[0] == 200
        _, gateway_text = await asyncio.to_thread(http_get, metrics_url + "/metrics")
        assert 'productbot_requests_total{kind="photo",outcome=' in gateway_text
    # The replicas export the same families through Ray's metrics agent, on the node's metrics export port.
    wanted = ("ray_productbot_forward_pass_seconds_count", "ray_productbot_map_level_seconds_count",
              "ray_productbot_model_info")
    node_metrics = f"http://127.0.0.1:{cluster.port + PORT_OFFSETS['--metrics-export-port']}/metrics"
    deadline = time.monotonic() + 60  # the agent exports what the replicas recorded every few seconds
    while True:
        _, text = await asyncio.to_thread(http_get, node_metrics)
        if all(name in text for name in wanted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert all(name in text for name in wanted), [name for name in wanted if name not in text]
    assert 'deployment="Classifier"' in text and 'deployment="Explainer"' in text


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_a_why_not_map_through_the_gateway_in_hindi_is_drawn_from_the_kept_grid(fake_api, running_bot, gateway_env):
    from bot import messages
    from bot.i18n import Languages

    hindi = Languages().get("hi")
    fake_api.set_language(3001, "hi")
    async with running_bot(**gateway_env) as app:
        svc = app.bot_data["services"]
        await ask(fake_api, fake_api.photo_update(jpeg(seed=8), chat_id=3001, user_id=3001))
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why", chat_id=3001, user_id=3001))
        _, fine = await why_maps(fake_api, 3001, mark)
        offered = [b for row in fine.params["reply_markup"]["inline_keyboard"] for b in row]
        names = svc.classifier.class_names
        assert offered and all(b["text"] in [messages.why_not_button(n, hindi) for n in names] for b in offered), offered
        cached_before = svc.stats.heatmaps_cached
        mark = fake_api.mark()
        await fake_api.push(fake_api.callback_update(offered[0]["callback_data"],
                                                     fake_api.messages[(3001, fine.params["message_id"])], user_id=3001))
        why_not = await fake_api.wait_for_call("sendPhoto", lambda c: c.chat_id == 3001, after=mark, timeout=60)
        for _ in range(100):  # the handler counts the map once sendPhoto has returned
            if svc.stats.heatmaps_cached > cached_before:
                break
            await asyncio.sleep(0.02)
        assert svc.stats.heatmaps_cached == cached_before + 1
        assert svc.inference.kept_maps == 1, "drawn from the grid the gateway kept, with no request to the cluster"
    assert why_not.text.startswith(offered[0]["text"]), why_not.text
    assert open_picture(why_not.photo_bytes)


async def test_a_replica_killed_mid_why_still_gives_the_map(fake_api, running_bot, gateway_env, cluster):
    async with running_bot(**gateway_env):
        await ask(fake_api, fake_api.photo_update(jpeg(seed=6), chat_id=2001))
        mark = fake_api.mark()
        await fake_api.push(fake_api.command_update("/why", chat_id=2001))
        await fake_api.wait_for_call("sendPhoto", lambda c: c.chat_id == 2001, after=mark, timeout=120)
        explainers = cluster.replicas("Explainer")
        assert explainers, f"no Explainer replica process under the head: {[process_title(p) for p in cluster.tree()]}"
        for pid in explainers:  # whichever one has the fine map: Serve restarts them
            os.kill(pid, signal.SIGKILL)
        fine = await fake_api.wait_for_call("editMessageMedia", lambda c: c.params.get("chat_id") == 2001,
                                            after=mark, timeout=240)
        assert open_picture(fine.photo_bytes)
        assert not [c for c in fake_api.answers_in(2001, after=mark) if c.method == "sendMessage"], \
            "the user got an error or busy message instead of the map"


def test_a_second_node_joins_and_takes_a_replica(cluster, tiny_checkpoint, token_file, tmp_path):
    waiting = cluster.replicas("Explainer")
    node = ServeProcess(tiny_checkpoint, token_file, tmp_path / "node.log", ["--cpus", "1"],
                        join=f"127.0.0.1:{cluster.port}").start()
    try:
        deadline = time.monotonic() + 180
        while not node.replicas("Explainer") and time.monotonic() < deadline and node.process.poll() is None:
            time.sleep(1)
        assert node.replicas("Explainer"), (f"no replica placed on the new node (head has {waiting});\n"
                                            + (tmp_path / "node.log").read_text()[-2000:])
    finally:
        left = node.stop()
    assert not left, f"the joined node left processes behind: {left}"


def _get(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _post(url: str, token: str, body: bytes, **headers: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_replicas_refuse_bodies_and_levels_past_the_caps(cluster):
    """A body over wire.MAX_BODY_BYTES is 413 (from its Content-Length); stride 1 and too many positions are 400."""
    from model.serve import wire

    token = cluster.inference_token_file.read_text()
    host, port = urllib.parse.urlsplit(cluster.address).hostname, urllib.parse.urlsplit(cluster.address).port
    for route in ("/classify", "/explain"):  # the headers only: the answer comes before any of the body is sent
        connection = http.client.HTTPConnection(host, port, timeout=60)
        connection.putrequest("POST", route)
        for name, value in {"Authorization": f"Bearer {token}", "X-Levels": "112x56",
                            "Content-Length": str(wire.MAX_BODY_BYTES + 1)}.items():
            connection.putheader(name, value)
        connection.endheaders()
        assert connection.getresponse().status == 413
        connection.close()
    for levels in ("16x1", "16x3", "112x56," * 5):
        assert _post(cluster.address + "/explain", token, jpeg(seed=1), **{"X-Levels": levels}) == 400
    assert _post(cluster.address + "/explain", token, jpeg(seed=1), **{"X-Levels": "112x112", "X-Timeout-S": "1e300"}) == 200


def test_clients_and_nodes_without_the_token_are_refused(cluster, token_file, tiny_checkpoint, tmp_path):
    for route in ("/classify", "/explain"):
        assert _get(cluster.address + route, None) == 401
        assert _get(cluster.address + route, "wrong-token") == 401
        assert _get(cluster.address + route, token_file.read_text()) == 401  # Ray's token is not the gateway's
        assert _get(cluster.address + route, cluster.inference_token_file.read_text()) == 200
    wrong = write_token(tmp_path / "wrong_token", "not-the-cluster-token")

    def ray_client(token_path):  # a Ray driver: it could run any code on the cluster, if let in
        return subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{cluster.port}'); print('CONNECTED')"],
            # (single-machine mode: it keeps 127.0.0.1, where the cluster listens, as the address)
            env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path),
                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, capture_output=True, text=True, timeout=120)

    assert "CONNECTED" in ray_client(token_file).stdout  # the same client, with the token, gets in
    refused = ray_client(wrong)
    assert "CONNECTED" not in refused.stdout and refused.returncode != 0, refused.stdout
    assert "InvalidAuthToken" in refused.stderr or "Authentication" in refused.stderr, refused.stderr[-2000:]
    node = ServeProcess(tiny_checkpoint, wrong, tmp_path / "refused.log", ["--cpus", "1"],
                        join=f"127.0.0.1:{cluster.port}").start(env={"INFERENCE_TOKEN_FILE": str(cluster.inference_token_file)})
    try:
        node.process.wait(120)
    finally:
        left = node.stop()
    assert node.process.returncode != 0, "a node with a wrong token joined"
    assert not left, left


def test_the_gateway_process_runs_without_torch(cluster, tmp_path):
    """A gateway's own process: connects, classifies, draws a map; torch never imported."""
    script = f"""
import asyncio, sys
from bot.inference.cluster import ClusterInference
from devtools.samples import jpeg
async def main():
    token = open({str(cluster.inference_token_file)!r}).read().strip()
    inference = ClusterInference({cluster.address!r}, token, queue_size=8,
                                 per_chat_queue=4, why_queue_size=2, deadline_s=60, why_deadline_s=120)
    inference.start()
    await inference.ready()
    prediction = await inference.classify(1, jpeg(seed=2))
    maps = [e async for e in inference.explain(1, jpeg(seed=2), [(112, 112), (112, 56)])]
    await inference.stop()
    print("RESULT", prediction.label, len(maps), maps[-1].final, "torch" in sys.modules, "ray" in sys.modules)
asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT")), "")
    assert line, done.stdout + done.stderr[-3000:]
    _, label, maps, final, torch_loaded, ray_loaded = line.split()
    assert maps == "2" and final == "True"
    assert torch_loaded == "False" and ray_loaded == "False", line


async def test_the_bot_recovers_when_the_cluster_restarts_and_nothing_is_left(fake_api, running_bot, gateway_env,
                                                                              cluster, caplog, classifier):
    async with running_bot(**gateway_env):
        left = cluster.stop()
        assert not left, f"the stopped cluster left processes behind: {left}"
        with caplog.at_level(logging.ERROR, logger="bot.inference.cluster"):
            _, busy = await ask(fake_api, fake_api.photo_update(jpeg(seed=7), chat_id=3001))
        assert "busy" in busy.text.lower() or "try again" in busy.text.lower(), busy.text
        assert any("unreachable" in record.getMessage() for record in caplog.records), caplog.text
        await asyncio.to_thread(cluster.start)  # the same ports again
        photo = jpeg(seed=8)
        _, answer = await ask(fake_api, fake_api.photo_update(photo, chat_id=3001), timeout=60)
        assert_prediction(answer, expected_prediction(classifier, photo))
