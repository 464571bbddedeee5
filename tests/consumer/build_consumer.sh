#!/usr/bin/env bash
# Configures, builds and runs tests/consumer in a clean directory, with doctest hidden from CMake
# (CMAKE_DISABLE_FIND_PACKAGE_doctest), as in a project that has never installed it. Fails if
# vox's add_subdirectory pulls in its tests, examples or CLI.
#   bash tests/consumer/build_consumer.sh VOX_SOURCE_DIR WORK_DIR
set -euo pipefail
source_dir="$1" work="$2"
rm -rf "$work"
mkdir -p "$work"
cmake -S "$source_dir/tests/consumer" -B "$work" -DVOX_SOURCE_DIR="$source_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_DISABLE_FIND_PACKAGE_doctest=TRUE > "$work/configure.log"
for target in test_core vox_cli vox_readme_sample; do
  if cmake --build "$work" --target help | grep -q "\.\.\. $target\$"; then
    echo "add_subdirectory(vox) defined vox's own target $target in a consumer's build" >&2
    exit 1
  fi
done
cmake --build "$work" -j2
"$work/consumer"
