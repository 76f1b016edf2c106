# chatbridge: the Slack and Telegram bots and the migration job.
# Build: docker build -t chatbridge .   Run: see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --create-home --uid 10001 chatbridge

COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY bots ./bots
COPY migrations ./migrations
# Editable, so `chatbridge db upgrade` finds migrations/ beside the code.
RUN pip install -e .

USER chatbridge
ENTRYPOINT ["chatbridge"]
CMD ["--help"]
