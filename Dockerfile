# podkit images: one build target per binary, each FROM scratch with only the
# static binary, /etc/passwd and /etc/group (user 65532 nonroot). No shell.
#
# `cargo xtask images` builds them all. By hand, after `cargo xtask dist` has put
# the static binaries into target/dist/:
#   podman build --target waitfor --build-arg VERSION=0.1.0 -t localhost/podkit/waitfor:dev .
# (.dockerignore keeps the context down to target/dist/ and images/.)
#
# Adding a binary: copy a stage below, change the name and the two labels, and add
# the binary to BINARIES in crates/xtask/src/dist.rs. The pod tests check every
# `FROM base AS <bin>` stage here (tests/tests/pods.rs).

ARG VERSION=dev

FROM scratch AS base
ARG VERSION
COPY images/passwd images/group /etc/
USER 65532:65532
LABEL org.opencontainers.image.source="https://github.com/podkit/podkit" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="podkit"

FROM base AS waitfor
LABEL org.opencontainers.image.title="waitfor" \
      org.opencontainers.image.description="Init-container tool: wait until every dependency is really ready, then exit 0 or exec the app"
COPY target/dist/waitfor /usr/local/bin/waitfor
ENTRYPOINT ["/usr/local/bin/waitfor"]

FROM base AS logship
LABEL org.opencontainers.image.title="logship" \
      org.opencontainers.image.description="Log sidecar: tails files on a shared volume through rotation and restarts, ships every line once"
COPY target/dist/logship /usr/local/bin/logship
ENTRYPOINT ["/usr/local/bin/logship"]

FROM base AS podproxy
LABEL org.opencontainers.image.title="podproxy" \
      org.opencontainers.image.description="Localhost reverse-proxy sidecar: routes the Pod's port to its containers, access logs for logship, readiness, drain"
COPY target/dist/podproxy /usr/local/bin/podproxy
ENTRYPOINT ["/usr/local/bin/podproxy"]

FROM base AS demo-app
LABEL org.opencontainers.image.title="demo-app" \
      org.opencontainers.image.description="The examples' app: the seed's frontend (a page that calls the backend through podproxy) or backend (a JSON API), logging JSON lines to a file it rotates by size"
COPY target/dist/demo-app /usr/local/bin/demo-app
ENTRYPOINT ["/usr/local/bin/demo-app"]
