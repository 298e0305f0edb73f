# One image for web, worker and beat (docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt ./
COPY vigil vigil
COPY incidents incidents
COPY collectors collectors
COPY assistant assistant
RUN pip install --no-cache-dir -c constraints.txt .
COPY . .
RUN VIGIL_SECRET_KEY=build-only python manage.py collectstatic --noinput
RUN useradd --system --uid 1000 vigil && mkdir -p /app/var && chown vigil /app/var
USER vigil
EXPOSE 8000
CMD ["gunicorn", "vigil.wsgi", "-c", "python:vigil.gunicorn"]
