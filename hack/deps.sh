# shellcheck shell=bash
# Sourced by hack/test.sh: install the Debian packages the tests run for real (OpenSSH server and client,
# PostgreSQL, openssl, Chromium and its WebDriver for the console's browser tests, sudo for the agent's) when they are missing,
# or say the exact command when this user cannot install.
need=()
command -v sshd >/dev/null || [[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
command -v openssl >/dev/null || need+=(openssl)
[[ -x /usr/bin/chromium ]] || need+=(chromium)
[[ -x /usr/bin/chromedriver ]] || need+=(chromium-driver)
# sudo and visudo for the server agent's e2e test (sudoers drop-ins checked with visudo -c, sudo -n true
# run inside its sandbox); util-linux's unshare/nsenter are in every Debian base.
command -v visudo >/dev/null || [[ -x /usr/sbin/visudo ]] || need+=(sudo)
if ((${#need[@]})); then
  echo "installing Debian packages: ${need[*]}" >&2
  if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "missing packages and no root: run  sudo apt-get install -y ${need[*]}  then try again" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The control plane is built with the machine's Go (GOTOOLCHAIN=local); Kubernetes 1.36 needs 1.26+.
go_minor=$(go env GOVERSION 2>/dev/null | sed -E 's/^go1\.([0-9]+).*/\1/')
if [[ -z "$go_minor" || "$go_minor" -lt 26 ]]; then
  echo "Go 1.26 or newer is required to build kube-apiserver 1.36 (found $(go env GOVERSION 2>/dev/null || echo none))" >&2
  exit 1
fi
