# The bot on a CPU-only server, without torch: python -m bot serving the OpenVINO export beside the mounted
# checkpoint (checkpoints/model.openvino/, written by python -m training or make export). Two stages:
#
#   exporter  torch (CPU wheel) + the project: writes the export for a checkpoint that has none
#               docker build --target exporter -t product-id-bot:exporter .
#               docker run --rm -v "$PWD/checkpoints:/app/checkpoints" product-id-bot:exporter
#   runtime   the serving set only (no torch: ~0.4 GB installed, README "On a small server"); the default target
#               docker build -t product-id-bot .
#               docker run -d --name product-id-bot --restart on-failure --init --cpus 1 --memory 1g \
#                   --env-file .env -v "$PWD/checkpoints:/app/checkpoints:ro" -v botdata:/app/data product-id-bot
#
# A checkpoint without a valid export does not serve in the runtime image (no torch to convert it): the bot says
# so and exits 2. See docs/serving.md (the README's "Run it on a small server") for the whole walkthrough.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM python:3.11-slim AS exporter
ARG TORCH_VERSION
ARG TORCHVISION_VERSION
ARG TORCH_INDEX_URL
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# The CPU wheel of torch is ~0.2 GB; PyPI's default Linux build drags in ~5 GB of CUDA libraries.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY pyproject.toml README.md ./
COPY model/ ./model/
COPY bot/ ./bot/
COPY training/ ./training/
# torch is already satisfied, so pip does not fetch the CUDA build from PyPI.
RUN pip install ".[train]"
# The checkpoint folder is mounted read-write: the export goes beside the checkpoint.
ENTRYPOINT ["python", "-m", "model", "export", "--checkpoint", "/app/checkpoints/model.pt"]

FROM python:3.11-slim AS runtime

# MPLCONFIGDIR: matplotlib (heat maps) wants a writable cache folder; /app is read-only to the bot user.
# MALLOC_ARENA_MAX: fewer glibc arenas for the bot's threads, less fragmentation (peak RSS ~70 MB lower here).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    MALLOC_ARENA_MAX=2 \
    CHECKPOINT_PATH=/app/checkpoints/model.pt \
    DATA_DIR=/app/data

# An unprivileged user with a fixed uid, so that mounted folders can be chowned to it on the host.
RUN groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid bot --home-dir /app --no-create-home --shell /usr/sbin/nologin bot

WORKDIR /app

COPY pyproject.toml README.md ./
COPY model ./model
COPY bot ./bot
COPY training ./training
# The translation catalogs (.po -> .mo, Babel), compiled fresh so the package installs them (package-data);
# a .mo left in the build context could be stale.
RUN pip install "babel>=2.12" && python -m bot.i18n compile --force
# The base install is the serving set (pyproject.toml): no torch. The webhooks extra (tornado) lets WEBHOOK_URL
# work behind a load balancer.
RUN pip install . "python-telegram-bot[webhooks]>=22,<23" \
    && python -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch got into the runtime image'"

# Mount points: the checkpoint and its export (read-only, from the host) and the bot's state.
RUN mkdir -p /app/checkpoints /app/data && chown bot:bot /app/data
VOLUME ["/app/checkpoints", "/app/data"]

USER bot

# A dead bot ends the container, which --restart on-failure (or the orchestrator) restarts; exit status 2 means a
# setting is missing. A bot that runs but is wedged (a stuck event loop, an ended inference thread or polling
# loop) is what /livez reports (docs/operations.md): METRICS_PORT serves it on the container's own loopback, and
# the HEALTHCHECK asks it with python -m bot.ops.probe (standard library, exit 0 on HTTP 200 only). Docker marks
# the container unhealthy; its restart policy does not act on that, so an orchestrator (or autoheal) must.
# The start period covers compiling the model on one core.
ENV METRICS_PORT=9464
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-m", "bot.ops.probe", "--timeout", "5", "http://127.0.0.1:9464/livez"]
# 8443 is used only in webhook mode (WEBHOOK_URL set). In the container's own network namespace the server
# listens on every interface (the bot's default, 127.0.0.1, would be unreachable); publish the port only to
# the TLS proxy (e.g. -p 127.0.0.1:8443:8443).
ENV WEBHOOK_LISTEN=0.0.0.0
EXPOSE 8443
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
