FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scheduler ./scheduler
COPY optimizer ./optimizer
COPY workers ./workers
COPY api ./api
COPY examples ./examples
RUN pip install --no-cache-dir ".[all]"  # every provider SDK: the workers launch on the catalog's providers
CMD ["cloudsched", "serve", "--host", "0.0.0.0", "--port", "8080"]
