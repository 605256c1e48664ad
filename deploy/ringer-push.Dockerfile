# ringer/ringer-push:dev — the reference push gateway and the development
# receiver ringer-sink, prebuilt static binaries (see scripts/build-images.sh;
# the context is dist/ctx/ringer-push/).
FROM scratch
COPY ringer-push ringer-sink /
USER 65534:65534
EXPOSE 8080 9103
ENTRYPOINT ["/ringer-push"]
