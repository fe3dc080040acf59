#!/usr/bin/env bash
# Wheels for the GPU suite's server row on a machine that cannot reach PyPI (the lent H200's image has
# Python 3.12, torch, transformers and peft, but not alaya serve's fastapi / pydantic / uvicorn).
# Run here (where pip reaches PyPI), carry .whl/ with the checkout, and on the GPU machine start with:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
# The versions are this project's tested ones (.venv); the GPU image already has anyio, h11, click, annotated-doc.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON_VERSION:-3.12}
mkdir -p .whl
for pkg in fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
           typing-inspection==0.4.5 uvicorn==0.55.0 opentelemetry-api==1.45.2 typing_extensions==4.16.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pkg"
done
ls -1 .whl
du -sh .whl
