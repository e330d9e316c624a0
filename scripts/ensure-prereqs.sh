#!/usr/bin/env bash
# Make sure the system programs a target needs are installed: ensure-prereqs.sh NAME...
#   gettext   msgfmt, which `manage.py compilemessages` runs for the ja translations
#   chromium  Debian's Chromium, which the Playwright browser tests drive (/usr/bin/chromium)
#   node      Debian's nodejs and npm, which run the OpenID provider of the SSO tests (tests/oidc)
# As root, a missing one is installed with apt-get (apt-get update first only if the plain
# install fails, so a machine with fresh lists pays nothing); otherwise it says what to run.
set -euo pipefail

have() {
    case "$1" in
        gettext) command -v msgfmt >/dev/null 2>&1 ;;
        chromium) [ -x /usr/bin/chromium ] ;;  # the path tests/browser launches
        node) command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ;;
        *) echo "ensure-prereqs: unknown prerequisite '$1'" >&2; exit 2 ;;
    esac
}

# Debian's package names for a prerequisite.
packages() {
    case "$1" in
        node) echo nodejs npm ;;
        *) echo "$1" ;;
    esac
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    # --no-install-recommends: headless Chromium needs none of its desktop recommendations.
    if ! apt-get install -y --no-install-recommends "$@"; then
        apt-get update
        apt-get install -y --no-install-recommends "$@"
    fi
}

missing=()
for name in "$@"; do
    have "$name" || missing+=("$name")
done
[ ${#missing[@]} -eq 0 ] && exit 0
wanted=()
for name in "${missing[@]}"; do
    read -r -a debian <<< "$(packages "$name")"
    wanted+=("${debian[@]}")
done

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-prereqs: installing ${wanted[*]} with apt-get"
    apt_install "${wanted[@]}"
    for name in "${missing[@]}"; do
        have "$name" || { echo "ensure-prereqs: $name still missing after apt-get" >&2; exit 1; }
    done
    exit 0
fi

echo "ensure-prereqs: missing ${missing[*]}; install them once with:" >&2
echo "    sudo apt-get install -y ${wanted[*]}" >&2
exit 1
