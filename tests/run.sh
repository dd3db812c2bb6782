#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs it:
# Debian packages for the real peers (Prometheus, Alertmanager, PostgreSQL, kubectl, dockerd and the static
# busybox its test images are made of, libfaketime), a virtualenv with
# the package and its test extras, then lint, the playbook tests and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
command -v dockerd >/dev/null || missing+=(docker.io)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v haproxy >/dev/null || missing+=(haproxy)  # deploy/compose's socket proxy, run for real
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)  # the console's browser tests (Selenium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v faketime >/dev/null || missing+=(faketime)  # a replica whose clock is off, for real
if ((${#missing[@]})); then
  echo "== installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v kubectl >/dev/null; then
  echo "== installing kubectl"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
echo "== installing remediator with test extras"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
# The example action plugin (docs/plugins.md): tests prove it is treated like a built-in.
.venv/bin/pip install -q --disable-pip-version-check -e tests/action_plugin
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check .
echo "== remediator lint (strict, with the production config and the alert rules)"
remediator lint --strict --config deploy/kubernetes/config.yaml --alert-rules deploy/prometheus rules/
echo "== remediator lint (the compose systems, with the compose host's config)"
remediator lint --strict --config deploy/compose/config.yaml rules/libervia.yaml rules/3dpot.yaml
if compgen -G "rules/*_test.yaml" >/dev/null; then
  echo "== remediator test rules/*_test.yaml"
  remediator test rules/*_test.yaml
fi
echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
