# lvad: the anomaly-detection service, CPU only.
#
#   docker build -t lvad .
#   docker run -p 127.0.0.1:8000:8000 -e LVAD_API_KEY=... -v lvad-store:/data/store lvad
#
# Two stages: the builder installs CPU torch and the project (non-editable) into a
# virtual environment; the final image is the slim base, that environment and a
# non-root user. No compiler, no CUDA, no pip cache. Configuration is by LVAD_*
# environment variables (README, "Service settings"); models and jobs live in the
# store volume /data/store. See docs/deployment.md.

FROM python:3.11-slim AS builder

# Where pip finds the CPU build of torch. Empty: pip's own configuration (PyPI and
# PIP_FIND_LINKS), which is how the test stand-in supplies a local CPU wheel.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# torch first, in its own layer: the biggest one, and it changes least often. Its
# C++ headers and test binaries (about 145 MB) serve extension builds and torch's
# own tests, neither of which happens here.
RUN if [ -n "$TORCH_INDEX_URL" ]; then export PIP_INDEX_URL="$TORCH_INDEX_URL"; fi \
 && pip install --no-cache-dir torch==2.13.0 \
 && python -c "import torch; assert not torch.version.cuda, torch.version.cuda; print('torch', torch.__version__)" \
 && rm -rf /opt/venv/lib/python3.11/site-packages/torch/include /opt/venv/lib/python3.11/site-packages/torch/test

# then the other dependencies, read from pyproject.toml (cached until it changes)
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install --no-cache-dir -r requirements.txt

# then the project itself, non-editable
COPY README.md ./
COPY model/ model/
COPY app/ app/
RUN pip install --no-cache-dir --no-deps . \
 && pip check


FROM python:3.11-slim

LABEL org.opencontainers.image.title="lvad" \
      org.opencontainers.image.description="LSTM-VAE anomaly detection for multivariate time series, as a service" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 lvad \
 && useradd --system --uid 10001 --gid lvad --home-dir /srv/lvad --create-home --shell /usr/sbin/nologin lvad \
 && mkdir -p /data/store \
 && chown -R lvad:lvad /data

COPY --from=builder /opt/venv /opt/venv
COPY docker/healthcheck.py /usr/local/lib/lvad/healthcheck.py

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LVAD_STORE=/data/store \
    LVAD_HOST=0.0.0.0 \
    LVAD_PORT=8000

# numeric, so that runtimes can verify it is not root (Kubernetes runAsNonRoot)
USER 10001:10001
WORKDIR /srv/lvad
VOLUME ["/data/store"]
EXPOSE 8000

# Ready = a model is served. A fresh store first trains the demo model (about a
# minute or two on two cores), which the start period allows for.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "/usr/local/lib/lvad/healthcheck.py"]

ENTRYPOINT ["lvad"]
CMD ["serve"]
