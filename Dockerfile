# nrg-serve on a CUDA PyTorch base image. Models are mounted, never downloaded:
#   docker build -t nrg-serve .
#   docker run --gpus all -p 8000:8000 -v /models:/models:ro -v nrg-data:/data nrg-serve \
#       --model wan=/models/Wan2.1-T2V-1.3B-Diffusers --reward wan=/models/wan-reward --dtype bfloat16
FROM pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 NRG_HOST=0.0.0.0 NRG_PORT=8000 NRG_DATA_DIR=/data
WORKDIR /opt/nrg-serve
COPY pyproject.toml constraints.txt README.md ./
COPY guidance ./guidance
COPY kernels ./kernels
COPY server ./server
# The image's CUDA torch (and its triton) satisfy the torch requirement; every other pin applies.
RUN grep -v '^torch==' constraints.txt > /tmp/constraints.txt \
    && pip install --no-cache-dir -c /tmp/constraints.txt ".[triton]" \
    && rm /tmp/constraints.txt

EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request, os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"NRG_PORT\"]}/health', timeout=4)"
ENTRYPOINT ["nrg", "serve"]
