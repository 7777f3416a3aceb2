# syntax=docker/dockerfile:1
#
# envoy-async-sidecar image.
#   docker build -t envoy-async-sidecar:dev .                      # the sidecar (default target)
#   docker build --target examples -t envoy-async-sidecar-examples:dev .
#                                                                  # + the demo app and webhook receiver
#
# Stages: build (all deps, `npm pack`: generate proto types, tsc, the package tarball) -> runtime
# (that package, installed with production deps only). The image holds the same files as the npm
# package (package.json "files"); its ENTRYPOINT is the package's bin (package.json "bin").
# Pinned by tag; pin by digest too (node:20.20.2-bookworm-slim@sha256:...) for reproducible builds.
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Dev dependencies are needed here: typescript, and the proto type generator run by `prebuild`.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json README.md ./
COPY scripts ./scripts
COPY src ./src
COPY envoy ./envoy
COPY openapi ./openapi
COPY docs ./docs
# npm pack runs prepack (an empty dist/, then npm run build: src/generated/, tsc, the Lua scripts,
# dashboard assets and ext_proc descriptor copied next to the compiled code) and packs what
# package.json's "files" lists; /pkg is the unpacked package.
RUN npm pack --no-audit --no-fund \
 && mkdir /pkg \
 && tar -xzf envoy-async-sidecar-*.tgz --strip-components=1 -C /pkg \
 && test -f /pkg/dist/src/main.js \
 && test -f /pkg/dist/src/generated/ext_proc.descriptor.json \
 && test -f /pkg/dist/openapi/openapi.yaml \
 && ls /pkg/dist/src/runs/scripts/*.lua >/dev/null

# ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /pkg/ ./
# The package, installed as `npm install <tarball>` would, but with the lockfile's exact versions
# (a tarball carries no lockfile, so that would resolve transitive versions anew).
# --omit=dev: no typescript/jest/@grpc/grpc-js-xds. --ignore-scripts: nothing at run time needs an
# install script (the package has none that npm ci runs; the one production dependency with an
# install script, protobufjs, only prints a notice about its optional CLI).
COPY package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force
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
# The package's bin, envoy-async-sidecar (package.json "bin"), run by node directly.
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
