# syntax=docker/dockerfile:1
#
# envoy-async-sidecar image.
#   docker build -t envoy-async-sidecar:dev .                      # the sidecar (default target)
#   docker build --target examples -t envoy-async-sidecar-examples:dev .
#                                                                  # + the demo app and webhook receiver
#
# Stages: build (all deps, generate proto types, tsc) -> runtime (production deps + dist/ only).
# Pinned by tag; pin by digest too (node:20.20.2-bookworm-slim@sha256:...) for reproducible builds.
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Dev dependencies are needed here: typescript, and the proto type generator run by `prebuild`.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
COPY openapi ./openapi
# prebuild (npm run generate) writes src/generated/, tsc writes dist/src/**, copy-assets adds
# dist/src/runs/scripts/*.lua, dist/src/admin/dashboard/* and dist/openapi/openapi.yaml.
RUN npm run build \
 && test -f dist/src/main.js \
 && test -f dist/openapi/openapi.yaml \
 && ls dist/src/runs/scripts/*.lua >/dev/null

# ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev: no typescript/jest. --ignore-scripts: nothing at run time needs an install
# script (the root package has none; `generate` runs only via prebuild/pretest, which npm ci
# never runs; the one production dependency with an install script, protobufjs, only prints a
# notice about its optional CLI).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY deploy/docker/healthcheck.js ./healthcheck.js
# The image's own `node` user, numeric (uid/gid 1000) so that Kubernetes runAsNonRoot can verify
# it. Nothing in /app is writable by it; the sidecar writes nothing to disk (logs go to stdout),
# so it also runs with a read-only root filesystem.
USER 1000:1000
# 50051: ext_proc gRPC + grpc.health.v1.Health.  9090: admin HTTP (/healthz /readyz /metrics,
# runs API). Admin binds 127.0.0.1 by default (ADMIN_ADDR): set ADMIN_ADDR=0.0.0.0:9090 to
# publish it, and ADMIN_TOKEN to protect its (unscoped) runs API.
EXPOSE 50051 9090
# Runs inside the container, so the loopback admin address works; the script follows ADMIN_ADDR.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "/app/healthcheck.js"]
# node is PID 1 and handles SIGTERM itself (drain, then exit within SHUTDOWN_GRACE seconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/src/main.js"]
CMD ["--role", "all"]

# ---------------------------------------------------------------------------------------------
# Demo image for docker-compose.yml and the Kubernetes try-it overlay: the sidecar image plus
# examples/ (the demo app and the webhook receiver, which uses node_modules/standardwebhooks).
FROM runtime AS examples
COPY examples ./examples

# ---------------------------------------------------------------------------------------------
# Default target (last stage): the sidecar without the examples.
FROM runtime AS sidecar
