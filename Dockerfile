# The closeguard reference service: the middleware (installed as a package) and app/ (run from
# the working directory, as from a checkout). Build: docker build -t closeguard .
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/closeguard

# The package and what app/ needs (the "app" extra), without the test dependencies. The
# versions are the ranges pyproject.toml allows (DL3013 asks for pins, meant for PyPI names).
COPY pyproject.toml README.md ./
COPY middleware ./middleware
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[app]'

COPY app ./app
# The explorer page's reconnect logic is the documentation's own snippet, served as it is.
COPY docs/examples/reconnect.js ./docs/examples/reconnect.js

# A numeric user, so that a runtime can check "not root" without reading /etc/passwd.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin closeguard
USER 10001:10001

EXPOSE 8000

# No curl in a slim image: the standard library asks /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3).status != 200)"]

# uvicorn sends 1012 (Service Restart) to open WebSockets on SIGTERM and waits at most 5 s
# for them, inside the 10 s a container runtime allows before SIGKILL. --proxy-headers trusts
# X-Forwarded-* only from FORWARDED_ALLOW_IPS (uvicorn's variable; default 127.0.0.1).
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--timeout-graceful-shutdown", "5"]
