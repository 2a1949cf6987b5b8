FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY producers producers
COPY routing routing
COPY providers providers
COPY workers workers
COPY storage storage
COPY mock_upstream mock_upstream
COPY batchyard batchyard
RUN pip install --no-cache-dir .
ENTRYPOINT ["batchyard"]
