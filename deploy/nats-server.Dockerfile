# ringer/nats-server:dev — nats-server built here from the nats-server/v2
# module pinned in go.mod, plus Ringer's cluster configs. Built by
# scripts/build-images.sh from a staged context (dist/ctx/nats-server/) that
# holds only the files copied below; no registry is needed.
FROM scratch
COPY nats-server healthcheck /
COPY nats/ /etc/nats/
# The JetStream store; a named volume created on it inherits this owner.
COPY --chown=65534:65534 data/ /data/
USER 65534:65534
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
CMD ["-c", "/etc/nats/nats1.conf"]
