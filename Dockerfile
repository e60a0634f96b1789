# Builds the same single binary as `npm run build`, then runs `latchkey server` as a non-root
# user with the data directory on a volume. To stamp the version into the binary and the labels:
#   docker build --build-arg LATCHKEY_VERSION=1.2.3 --build-arg LATCHKEY_REVISION="$(git rev-parse HEAD)" .
# Without LATCHKEY_VERSION the binary reports package.json's version and the version label is empty.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY bunfig.toml tsconfig.json ./
COPY src ./src
COPY assets ./assets
COPY scripts ./scripts
ARG LATCHKEY_VERSION
# A binary that does not report the version asked for fails the build rather than ship.
RUN LATCHKEY_VERSION="${LATCHKEY_VERSION:-}" npm run build \
 && ./dist/latchkey version \
 && if [ -n "${LATCHKEY_VERSION:-}" ]; then test "$(./dist/latchkey version)" = "latchkey ${LATCHKEY_VERSION}"; fi

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/latchkey --shell /usr/sbin/nologin latchkey \
 && mkdir -p /var/lib/latchkey && chown latchkey:latchkey /var/lib/latchkey && chmod 0700 /var/lib/latchkey
COPY --from=build /src/dist/latchkey /usr/local/bin/latchkey
USER latchkey
WORKDIR /var/lib/latchkey
VOLUME ["/var/lib/latchkey"]
EXPOSE 9000 9443
# Settings go in LATCHKEY_* variables or latchkey.json on the volume rather than in CMD flags, so
# that the health check, which reads them the same way, asks the listener the server binds.
ENV LATCHKEY_DATA_DIR=/var/lib/latchkey \
    LATCHKEY_LISTEN=0.0.0.0:9000
# No curl in this image: the binary asks its own GET /healthz (over HTTPS when LATCHKEY_TLS_CERT
# is set), gives up after 5 s and exits 0 or 1.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/latchkey", "health"]
STOPSIGNAL SIGTERM
# Last, so that a new version or revision does not rebuild the layers above.
ARG LATCHKEY_VERSION
ARG LATCHKEY_REVISION
LABEL org.opencontainers.image.title="latchkey" \
      org.opencontainers.image.description="Self-hosted client enrollment, authentication and licensing server in one executable" \
      org.opencontainers.image.version="${LATCHKEY_VERSION}" \
      org.opencontainers.image.revision="${LATCHKEY_REVISION}" \
      org.opencontainers.image.licenses="MIT"
ENTRYPOINT ["/usr/local/bin/latchkey"]
CMD ["server"]
