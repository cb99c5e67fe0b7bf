# gpuq service and agent image.
FROM python:3.11-slim
WORKDIR /opt/gpuq
COPY pyproject.toml README.md alembic.ini ./
COPY queue_service ./queue_service
COPY partitioner ./partitioner
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/gpuq gpuq && mkdir -p /var/lib/gpuq \
    && chown gpuq /var/lib/gpuq
ENV GPUQ_DATA_DIR=/var/lib/gpuq GPUQ_HOST=0.0.0.0
EXPOSE 8421
ENTRYPOINT ["gpuq"]
CMD ["serve"]
