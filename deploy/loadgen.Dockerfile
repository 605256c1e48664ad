# ringer/loadgen:dev — Ringer's load generator, prebuilt static binary (see
# scripts/build-images.sh; the context is dist/ctx/loadgen/).
FROM scratch
COPY loadgen /
USER 65534:65534
ENTRYPOINT ["/loadgen"]
