# nrg-serve on a CUDA PyTorch base image. Models are mounted, never downloaded:
#   docker build -t nrg-serve .
#   docker run --gpus all -p 8000:8000 -v /models:/models:ro -v nrg-data:/data -v nrg-cache:/var/cache/nrg \
#       nrg-serve --model wan=/models/Wan2.1-T2V-1.3B-Diffusers --reward wan=/models/wan-reward
# --dtype defaults to auto (bfloat16 on the GPU).
# The base's torch stack is recorded in docker/base-image-packages.txt; change both together.
FROM pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime

# Triton's kernel cache and inductor's (--compile) live on a volume, so what is compiled once survives
# container restarts.
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 NRG_HOST=0.0.0.0 NRG_PORT=8000 NRG_DATA_DIR=/data \
    TRITON_CACHE_DIR=/var/cache/nrg/triton TORCHINDUCTOR_CACHE_DIR=/var/cache/nrg/inductor
# Triton compiles a small C launcher at the first kernel launch: the -runtime image has no compiler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/nrg-serve
COPY pyproject.toml constraints.txt README.md ./
COPY docker/derive_constraints.py ./docker/
COPY guidance ./guidance
COPY kernels ./kernels
COPY server ./server
COPY demo_world ./demo_world
# Every package the image ships (torch, triton, ...) stays at the image's version; constraints.txt pins
# the rest (docker/derive_constraints.py).
RUN pip list --format=freeze > /tmp/image.txt \
    && python docker/derive_constraints.py constraints.txt /tmp/image.txt > /tmp/constraints.txt \
    && pip install --no-cache-dir -c /tmp/constraints.txt ".[triton]" \
    && rm /tmp/image.txt /tmp/constraints.txt

# Not root: the server, the compile caches and the jobs under /data belong to nrg.
RUN useradd --create-home --uid 1000 nrg && mkdir -p /data /var/cache/nrg/triton /var/cache/nrg/inductor \
    && chown nrg:nrg /data /var/cache/nrg /var/cache/nrg/triton /var/cache/nrg/inductor
USER nrg
EXPOSE 8000
VOLUME ["/data", "/var/cache/nrg"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request, os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"NRG_PORT\"]}/health', timeout=4)"
ENTRYPOINT ["nrg", "serve"]
