#!/bin/bash
# Packs what benchmarks/gpu_check.py needs on a lent GPU machine that its image lacks, into
# .gpucheck/ (git-ignored; name it in the device call's `carry`): the Python packages
# PyAV, pycocotools, Ray and jsonschema (Ray's) as one xz tarball, Ray without its Java
# jars, dashboard web client and RLlib and with its binaries stripped (the wheels as
# they are would be 116 MB, over the 64 MiB a call carries); and the clips of
# ../shared/videos. Run here, in the repository's root, once: about 55 MB in all.
#
#   bash infra/gpu_check_pack.sh && du -sh .gpucheck
set -eu
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
EXCLUDE="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.gpucheck/' "$EXCLUDE" || echo /.gpucheck/ >> "$EXCLUDE"
rm -rf .gpucheck && mkdir -p .gpucheck/videos /tmp/gpucheck_wheels
WHEELS=/tmp/gpucheck_wheels
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
for NAME in ray av pycocotools jsonschema jsonschema-specifications referencing rpds-py; do
  compgen -G "$WHEELS/${NAME//-/_}-$(version $NAME)-*.whl" > /dev/null && continue
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" "$NAME==$(version $NAME)"
done
SITE=$(mktemp -d)
for WHEEL in "$WHEELS"/*.whl; do
  case $(basename "$WHEEL") in
    ray-*) unzip -q -o "$WHEEL" -d "$SITE" -x 'ray/jars/*' 'ray/dashboard/client/build/*' \
      'ray/rllib/*' ;;
    *) unzip -q -o "$WHEEL" -d "$SITE" ;;
  esac
done
strip --strip-unneeded "$SITE"/ray/_raylet.so "$SITE"/ray/core/src/ray/gcs/gcs_server \
  "$SITE"/ray/core/src/ray/raylet/raylet
tar -cf - -C "$SITE" . | xz -9 -T2 > .gpucheck/site.tar.xz
rm -rf "$SITE"
cp ../shared/videos/*.mp4 .gpucheck/videos/ 2>/dev/null || echo "no ../shared/videos: moving boxes"
du -sh .gpucheck
