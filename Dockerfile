# recur: one image, every role (the command picks it: all, api, worker, scheduler, migrate).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin recur

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/recur /usr/local/bin/recur
USER 10001
EXPOSE 8080 9464
ENTRYPOINT ["recur"]
CMD ["all"]
