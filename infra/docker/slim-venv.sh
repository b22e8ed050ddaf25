#!/bin/sh
# Trim a venv for a runtime image, in its build stage: only what nothing imports at run time goes.
#   - tensorflow/include: C++ headers for compiling custom ops (~290 MB)
#   - the test suites of pandas, scipy, scikit-learn, numpy, pyarrow, matplotlib, networkx (~130 MB)
#   - the static symbol tables of TensorFlow's shared libraries (strip --strip-unneeded keeps the dynamic
#     symbols they link by; ~200 MB), when binutils is there (the Debian-package base has it)
set -eu
site="$(echo "$1"/lib/python3*/site-packages)"
rm -rf "$site/tensorflow/include"
for pkg in pandas scipy sklearn numpy pyarrow matplotlib networkx; do
  [ -d "$site/$pkg" ] && find "$site/$pkg" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +
done
if [ ! -d "$site/tensorflow" ]; then
  :
elif command -v strip >/dev/null; then
  find "$site/tensorflow" -name '*.so*' -type f -exec strip --strip-unneeded {} +
else
  echo "slim-venv.sh: no strip (binutils) in this base: TensorFlow's libraries keep their symbol tables" >&2
fi
