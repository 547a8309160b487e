# The image the chart runs (all components: `quayside registry | proxy | token-refresher`).
# A static musl binary on distroless/static: no shell, no package manager, CA roots included,
# runs as uid 65532 (the chart's runAsUser).
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p quayside && cp target/release/quayside /quayside

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /quayside /usr/bin/quayside
USER 65532:65532
EXPOSE 5000 5555 8080
ENTRYPOINT ["/usr/bin/quayside"]
CMD ["registry", "--listen", "0.0.0.0:5000"]
