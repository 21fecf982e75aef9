# A CUDA runtime image with tuner installed. The torch wheel brings its own CUDA 13 libraries;
# the host needs an NVIDIA driver and the NVIDIA container toolkit (docker run --gpus all).
FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1

WORKDIR /opt/tuner
COPY pyproject.toml README.md ./
COPY tuner ./tuner
COPY studies ./studies
RUN pip install --no-cache-dir ".[s3]"

# Studies, checkpoints and datasets live in the mounted working directory.
WORKDIR /work
ENTRYPOINT ["tuner"]
CMD ["--help"]
