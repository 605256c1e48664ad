# ringer/brokerd:dev — the Ringer broker, prebuilt static binary (see
# scripts/build-images.sh; the context is dist/ctx/brokerd/).
FROM scratch
COPY brokerd healthcheck /
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/brokerd"]
