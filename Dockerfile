# The bot on a CPU-only server: python -m bot, settings from an env file, the checkpoint mounted read-only.
#
#   docker build -t product-id-bot .
#   docker run -d --name product-id-bot --restart on-failure --init --cpus 2 --memory 2g \
#       --env-file .env -e TORCH_THREADS=2 \
#       -v "$PWD/checkpoints:/app/checkpoints:ro" -v botdata:/app/data product-id-bot
#
# See docs/serving.md (the README's "Run it on a small server") for the whole walkthrough.
FROM python:3.11-slim

# The CPU wheel of torch is ~0.2 GB; PyPI's default Linux build drags in ~5 GB of CUDA libraries and
# costs ~0.4 GB more resident memory (torch alone at import: 508 MB vs 218 MB; docs/serving.md).
# Pinned to what the project is tested with.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

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

# torch first, in its own layer: code changes rebuild only the small layers below.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# The project itself; torch is already satisfied, so pip does not fetch the CUDA build from PyPI.
# The webhooks extra (tornado) lets WEBHOOK_URL work behind a load balancer.
COPY pyproject.toml README.md ./
COPY model ./model
COPY bot ./bot
COPY training ./training
# The translation catalogs (.po -> .mo, Babel), compiled fresh so the package installs them (package-data);
# a .mo left in the build context could be stale.
RUN pip install "babel>=2.12" && python -m bot.i18n compile --force
RUN pip install . "python-telegram-bot[webhooks]>=22,<23" \
    && python -c "import torch; assert not torch.version.cuda, 'a CUDA build of torch got into the image'"

# Mount points: the checkpoint (read-only, from the host) and the bot's state (last photo per chat).
RUN mkdir -p /app/checkpoints /app/data && chown bot:bot /app/data
VOLUME ["/app/checkpoints", "/app/data"]

USER bot

# No HEALTHCHECK: a polling bot has no port to probe, and a dead bot ends the container, which
# --restart on-failure (or the orchestrator) restarts. Exit status 2 means a setting is missing.
# 8443 is used only in webhook mode (WEBHOOK_URL set).
EXPOSE 8443
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
