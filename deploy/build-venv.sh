#!/bin/sh
# Build the orderview wheel from SOURCE and install it, without extras, into a fresh VENV.
# The image's builder stage runs this; tests/deploy runs it too, so both take the same steps.
set -eu

SOURCE=${1:?usage: build-venv.sh SOURCE VENV}
VENV=${2:?usage: build-venv.sh SOURCE VENV}
WHEELS=$(mktemp -d)
trap 'rm -rf "$WHEELS"' EXIT

python3 -m pip wheel --no-deps --wheel-dir "$WHEELS" "$SOURCE"
# No pip, setuptools or wheel in the runtime venv: the builder's pip installs into it.
python3 -m venv --without-pip "$VENV"
python3 -m pip --python "$VENV/bin/python" install --no-compile "$WHEELS"/orderview-*.whl
# Of the Swagger UI files swagger-ui-py ships, /schema serves the bundle, its preset, its stylesheet
# and an icon: the source maps, the ES-module builds and Swagger Editor (23 of its 25 MB) go.
find "$VENV" -path '*/swagger_ui/static/*' \( -name '*.map' -o -name 'swagger-editor*' \
    -o -name 'swagger-ui-es-bundle*' -o -name 'swagger-ui.js' \) -delete
# Debug symbols are most of the size of the compiled extensions (uvloop, asyncpg): drop them.
find "$VENV" -name '*.so' -exec strip --strip-debug {} +
# Compile once here, so a read-only root filesystem never needs to write .pyc files; faker and
# pygments (pulled in by litestar for examples and pretty tracebacks) are large and rarely run.
"$VENV/bin/python" -m compileall -q -x '/(faker|pygments)/' "$VENV/lib"
