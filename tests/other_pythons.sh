#!/usr/bin/env bash
# Run the unit layer, and the fork, pool and executor tests, on the oldest and the newest
# supported Python.
#
#   tests/other_pythons.sh              # 3.9 and 3.13
#   tests/other_pythons.sh 3.12         # any list of X.Y versions
#
# For each version it finds an interpreter (PATH lookup of pythonX.Y, then
# ~/.pyenv/versions/*/bin; pyenv shims that do not actually run that version are
# skipped), keeps a light venv in .venv-X.Y (re-created when missing, broken, or
# when pyproject.toml, the interpreter or the requirement list changed) with just
# the test runner and `-e .` (no host servers: nothing to compile), then runs
# tests/unit (serially), then tests/process/test_pipeline.py and
# tests/host/test_host_multiprocessing.py with xdist. The newest Python's venv has the
# `fast` extra (orjson) too, the oldest's has not: CI runs those layers both ways (the
# main .venv of `make venv` has it as well).
# A version with no interpreter is an error, never a silent skip.
# Environment: PYTEST_WORKERS (default 2), PYTEST_ARGS (extra pytest arguments).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS=("pytest>=7" "pytest-xdist>=3" "pytest-timeout>=2" "psutil>=5.9" "requests>=2.25" "PyYAML>=6")
UNIT_TESTS=(tests/unit)
PROCESS_TESTS=(tests/process/test_pipeline.py tests/host/test_host_multiprocessing.py)
WORKERS="${PYTEST_WORKERS:-2}"
FAST_EXTRA_ON=(3.13)  # the versions whose venv installs `-e .[fast]` (orjson), not just `-e .`

# Prints the pip target of the package for version $1: with the fast extra or without.
package_spec() {
    local version=$1 fast
    for fast in "${FAST_EXTRA_ON[@]}"; do
        [[ $version == "$fast" ]] && { echo ".[fast]"; return 0; }
    done
    echo "."
}

# Prints the path of a working interpreter of version $1 (X.Y), or nothing.
find_python() {
    local version=$1 candidate found
    local -a candidates=()
    found=$(command -v "python${version}" 2>/dev/null || true)
    [[ -n $found ]] && candidates+=("$found")
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"${version}"*/bin/"python${version}"; do
        [[ -x $candidate ]] && candidates+=("$candidate")
    done
    for candidate in "${candidates[@]}"; do
        if [[ $("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
            2>/dev/null) == "$version" ]]; then
            "$candidate" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 0
}

# What the venv was built from: when it changes, the venv is rebuilt.
fingerprint() {
    local python=$1
    {
        "$python" -c 'import sys; print(sys.executable, sys.version)'
        printf '%s\n' "${REQUIREMENTS[@]}" "$(package_spec "$2")"
        cat pyproject.toml
    } | sha256sum | cut -d' ' -f1
}

# Creates or refreshes .venv-X.Y for interpreter $2; prints the venv's python.
ensure_venv() {
    local version=$1 python=$2 venv=".venv-$1" wanted
    wanted=$(fingerprint "$python" "$version")
    if [[ -x $venv/bin/python && -f $venv/.stamp && $(cat "$venv/.stamp") == "$wanted" ]] \
        && "$venv/bin/python" -c 'import pytest, xdist, psutil, yaml, trubrics_mp' 2>/dev/null; then
        echo "$venv/bin/python"
        return 0
    fi
    echo "== building $venv with $python" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q "${REQUIREMENTS[@]}" -e "$(package_spec "$version")" >&2
    echo "$wanted" >"$venv/.stamp"
    echo "$venv/bin/python"
}

main() {
    local versions=("$@") version python venv_python failed=()
    [[ ${#versions[@]} -gt 0 ]] || versions=(3.9 3.13)
    for version in "${versions[@]}"; do
        python=$(find_python "$version")
        if [[ -z $python ]]; then
            echo "error: no working python${version} on PATH or in ~/.pyenv/versions" >&2
            failed+=("$version (no interpreter)")
            continue
        fi
        venv_python=$(ensure_venv "$version" "$python")
        echo "== Python ${version}: $("$venv_python" -V 2>&1) ($python), JSON encoder:" \
            "$("$venv_python" -c 'import os; from trubrics_mp._serialize import choose_encoder
print(choose_encoder(os.environ).name)')"
        # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words on purpose
        if ! "$venv_python" -m pytest -p no:cacheprovider ${PYTEST_ARGS:-} "${UNIT_TESTS[@]}" \
            || ! "$venv_python" -m pytest -n "$WORKERS" -p no:cacheprovider --durations=5 \
                ${PYTEST_ARGS:-} "${PROCESS_TESTS[@]}"; then
            failed+=("$version")
        fi
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        echo "== failed on Python: ${failed[*]}" >&2
        return 1
    fi
    echo "== passed on Python ${versions[*]}"
}

main "$@"
