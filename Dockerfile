# The interlink-htcondor plugin image: the project's base install (the plugin and its CLI,
# with the HTCondor Python bindings: the `htcondor` wheel, no daemons; no Dask) in a
# virtualenv, at the versions of constraints.txt, run as an unprivileged user.
#
#   docker build -t registry.example.org/interlink-htcondor:0.1.0 .
#   docker run --rm -v $PWD/config.yaml:/etc/interlink-htcondor/config.yaml:ro \
#     -v interlink-socket:/run/interlink-htcondor registry.example.org/interlink-htcondor:0.1.0
#
# Configuration is one YAML file (docs/configuration.md) at /etc/interlink-htcondor/config.yaml
# plus INTERLINK_HTCONDOR_* and _CONDOR_* environment variables. The built-in file makes the
# plugin listen on the unix socket /run/interlink-htcondor/plugin.sock, to share with
# interLink's API server through a volume.
FROM python:3.11-slim-bookworm

# CONDOR_CONFIG=ONLY_ENV: the bindings take their settings from the environment (_CONDOR_*,
# which the plugin sets from its config) and read no HTCondor config file.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/interlink-htcondor \
    PATH=/opt/interlink-htcondor/bin:$PATH \
    CONDOR_CONFIG=ONLY_ENV

COPY pyproject.toml README.md constraints.txt /build/
COPY src /build/src
RUN python -m venv "$VIRTUAL_ENV" \
    && pip install -c /build/constraints.txt /build \
    && rm -rf /build \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/interlink-htcondor \
        --shell /usr/sbin/nologin interlink \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/interlink-htcondor \
        /var/lib/interlink-htcondor/pods /run/interlink-htcondor \
    && install -d -m 0755 /etc/interlink-htcondor \
    && printf 'server:\n  socket: /run/interlink-htcondor/plugin.sock\n' \
        > /etc/interlink-htcondor/config.yaml

USER 10001:10001
WORKDIR /var/lib/interlink-htcondor
VOLUME ["/run/interlink-htcondor", "/var/lib/interlink-htcondor/pods"]

# Probes whatever listener the config names (socket, or TCP with TLS).
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["interlink-htcondor", "healthcheck", "--config", "/etc/interlink-htcondor/config.yaml"]

ENTRYPOINT ["interlink-htcondor"]
CMD ["serve", "--config", "/etc/interlink-htcondor/config.yaml"]
