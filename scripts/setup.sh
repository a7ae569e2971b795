#!/usr/bin/env bash
# Idempotent set-up on Debian 12 as root: Debian packages, .venv, pinned Python packages, self-check.
# Called by `make setup`. A second run skips what is already there and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++ and python3-dev: torch.compile (engine --compile) builds C++ kernels against Python.h.
# qgis-server: qgis_mapserver serves the WMS of the plugin's web-layer test (tests/qgis_plugin/test_qgis_server_wms.py).
APT_PACKAGES=(qgis python3-qgis python3-gdal gdal-bin python3-venv python3-pip python3-dev g++ xvfb xauth x11-utils xdotool imagemagick qgis-server)
VENV=.venv
PY=/usr/bin/python3

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: Debian packages present"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV on $PY (--system-site-packages, for qgis and osgeo)"
  "$PY" -m venv --system-site-packages "$VENV"
fi

# Re-install only when the pins changed since the last successful install.
stamp="$VENV/.requirements.sha256"
want="$(cat requirements.txt constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing pinned Python packages"
  links=()
  [ -d /opt/wheels ] && links=(--find-links /opt/wheels)
  # PyPI's "+cpu" torch lives at download.pytorch.org, unreachable here; /opt/wheels holds it on these machines.
  log="$(mktemp)"
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check "${links[@]}" -r requirements.txt -c constraints.txt >"$log" 2>&1; then
    grep -v "is ignored" "$log"; rm -f "$log"; echo "setup: pip install failed (see above)"; exit 1
  fi
  rm -f "$log"
  # fail here, not later, when the install did not work
  "$VENV/bin/python" -c "from engine._torch_compat import ensure_torchvision_importable as f; f(); import timm, numpy"
  echo "$want" > "$stamp"
else
  echo "setup: Python packages up to date"
fi

"$VENV/bin/python" -m engine.selfcheck
