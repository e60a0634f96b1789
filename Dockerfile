# Builds the same single binary as `npm run build`, then runs `latchkey server` as a non-root
# user with the data directory on a volume.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY bunfig.toml tsconfig.json ./
COPY src ./src
COPY assets ./assets
COPY scripts ./scripts
ARG LATCHKEY_VERSION
RUN LATCHKEY_VERSION="${LATCHKEY_VERSION:-}" npm run build && ./dist/latchkey version

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/latchkey --shell /usr/sbin/nologin latchkey \
 && mkdir -p /var/lib/latchkey && chown latchkey:latchkey /var/lib/latchkey && chmod 0700 /var/lib/latchkey
COPY --from=build /src/dist/latchkey /usr/local/bin/latchkey
USER latchkey
WORKDIR /var/lib/latchkey
VOLUME ["/var/lib/latchkey"]
EXPOSE 9000 9443
ENV LATCHKEY_DATA_DIR=/var/lib/latchkey
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/latchkey"]
CMD ["server", "--listen", "0.0.0.0:9000"]
