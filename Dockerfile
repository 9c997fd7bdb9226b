# fusiongraph's HTTP server, one replica per container (see compose.yaml and README "Deploy").
# Not built on the machine this was written on (it has no Docker daemon): the commands it runs
# are the ones tests/integration/test_replicas.py runs against a real PostgreSQL and Redis.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# bubblewrap: verify's code sandbox (tools/sandbox.py). It needs user namespaces, which Docker's
# default seccomp profile refuses to an unprivileged container: run with a profile that allows
# them (e.g. `--security-opt seccomp=unconfined`), or verify falls back to select and its record
# says `sandbox unavailable`.
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*
# Hosted models only: the `local` extra (llama.cpp, compiled from source) is left out; `durable`
# brings the PostgreSQL checkpointer and the Redis client for the shared panel cache.
COPY pyproject.toml README.md ./
COPY fusiongraph fusiongraph
COPY graph graph
COPY nodes nodes
COPY tools tools
COPY local_model local_model
COPY serve serve
COPY evals evals
RUN pip install '.[durable]' && useradd --create-home --uid 10001 fusion

USER fusion
EXPOSE 8000
# Read by `fusiongraph serve`: FUSIONGRAPH_CHECKPOINTER (postgresql://...), FUSIONGRAPH_CACHE
# (redis://...), FUSIONGRAPH_WORKERS (default: one per core), FUSIONGRAPH_API_KEYS,
# FUSIONGRAPH_PRESET and the providers' keys. SIGTERM (docker stop) lets in-flight runs finish
# within --grace-s (30 s): give the container a longer stop timeout than that.
# /readyz: settings valid and API keys present for the offered models, not shutting down.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
CMD ["fusiongraph", "serve", "--host", "0.0.0.0", "--port", "8000"]
