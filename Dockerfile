# syntax=docker/dockerfile:1
# The clusterregistry image: one image for every process; a Deployment picks the process
# with its command, `python /app/cmd/<name>.py --config /etc/clusterregistry/settings.yaml`.
#
#   docker build -t ghcr.io/clusterregistry/clusterregistry:0.1.0 .
#
# The registry and NATS run their own upstream images (registry:2, nats); see
# deploy/kustomize/base/kustomization.yaml for the tags.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# metadata first: the dependency layer is rebuilt only when pyproject.toml changes
COPY pyproject.toml README.md ./
# the product alone: kubesim and the sandbox are distributions of their own (test tools)
COPY pkg/clusterregistry ./pkg/clusterregistry
# pip compiles every module to bytecode here: at run time the root filesystem is read-only
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
COPY cmd /app/cmd
WORKDIR /app
# the same numeric user as the manifests' runAsUser, so runAsNonRoot can verify it
USER 65532:65532
EXPOSE 8080
CMD ["python", "/app/cmd/relay.py", "--help"]
