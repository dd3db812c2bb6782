# syntax=docker/dockerfile:1
# remediator container image: `docker build -t remediator .`
#
# Two stages: the first builds remediator's wheel and installs it with its dependencies
# into a virtualenv; the second copies only that virtualenv onto a clean slim Python. The
# final image has no compiler, no build tools and no source tree; it runs as an unprivileged
# user with `remediator serve` as its entrypoint.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY remediator ./remediator
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/remediator \
 && /opt/remediator/bin/pip install /dist/*.whl \
 && /opt/remediator/bin/pip uninstall --yes pip \
 && /opt/remediator/bin/remediator --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="remediator" \
      org.opencontainers.image.description="Alertmanager webhook receiver: alerts to guarded, audited remediation" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/remediator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 remediator \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/remediator \
            --no-create-home --shell /usr/sbin/nologin remediator \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/remediator
COPY --from=build /opt/remediator /opt/remediator
# The shipped playbooks; in Kubernetes the rules ConfigMap is mounted over this directory.
COPY rules /etc/remediator/rules
WORKDIR /var/lib/remediator
USER 10001:10001
EXPOSE 9095
VOLUME ["/var/lib/remediator"]
ENTRYPOINT ["remediator", "serve"]
# Defaults for `docker run`; Kubernetes replaces them with its own args (config file).
CMD ["--listen=0.0.0.0:9095", "--store=sqlite:////var/lib/remediator/remediator.db", \
     "--rules=/etc/remediator/rules"]
