# The gateway with its embedded Redis (Debian's redis-server; set GATEWAY_REDIS_URL to use your own).
FROM python:3.12-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY gateway ./gateway
COPY metering ./metering
COPY ratelimit ./ratelimit
RUN pip install --no-cache-dir .

RUN useradd --system --home /data gateway && mkdir -p /data && chown gateway /data
USER gateway
ENV GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["gateway"]
CMD ["serve"]
