# ringer/ringer-push:dev — the reference push gateway, the webhook relay
# (ringer-webhook) and the development receiver ringer-sink, prebuilt static
# binaries (see scripts/build-images.sh;
# the context is dist/ctx/ringer-push/).
FROM scratch
COPY ringer-push ringer-webhook ringer-sink /
USER 65534:65534
EXPOSE 8080 9103 9104
ENTRYPOINT ["/ringer-push"]
