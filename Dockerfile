# KubeHarden's image: built from the locked sources, run from a distroless base as a numeric
# non-root user, with no shell in the runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features app,admission --bin kubeharden \
    && install -m 0755 target/release/kubeharden /kubeharden

# glibc and CA certificates, nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /kubeharden /usr/local/bin/kubeharden
USER 65532:65532
# The SQLite database of deliveries and jobs (DATABASE_URL defaults to sqlite://kubeharden.db)
# and the credentials file the setup flow writes.
ENV DATA_DIR=/data
WORKDIR /data
VOLUME ["/data"]
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/kubeharden"]
CMD ["serve"]
