#!/bin/bash
# Install the kubepam server agent on a machine (or into a machine image):
#
#   install.sh --broker URL --namespace NS --project P --token-file PATH [--wheel PATH|URL]
#              [--prefix P] [--no-start]
#
# - a venv at /opt/kubepam-agent with the kubepam wheel (--wheel, or `pip install kubepam`), unless
#   /opt/kubepam-agent/bin/kubepam is already there;
# - /etc/kubepam-agent.env (mode 0600) with the settings;
# - the systemd unit kubepam-agent.service (next to this script);
# - /etc/ssh/sshd_config.d/kubepam.conf: TrustedUserCAKeys and AuthorizedPrincipalsFile, checked with
#   `sshd -t` before sshd is reloaded;
# - `systemctl enable --now kubepam-agent` (unless --no-start, e.g. while building an image: the agent
#   then enrolls at the machine's first boot).
set -euo pipefail

PREFIX_DIR=/opt/kubepam-agent
ENV_FILE=/etc/kubepam-agent.env
UNIT=/etc/systemd/system/kubepam-agent.service
SSHD_DROPIN=/etc/ssh/sshd_config.d/kubepam.conf
SSHD_DIR=/etc/ssh/kubepam
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

broker="" namespace="" project="" token_file="" wheel="" prefix="" start=1
usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while [[ $# -gt 0 ]]; do
  case $1 in
    --broker) broker=${2:?}; shift 2 ;;
    --namespace) namespace=${2:?}; shift 2 ;;
    --project) project=${2:?}; shift 2 ;;
    --token-file) token_file=${2:?}; shift 2 ;;
    --wheel) wheel=${2:?}; shift 2 ;;
    --prefix) prefix=${2:?}; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument $1" >&2; usage ;;
  esac
done
[[ -n $broker && -n $namespace && -n $project && -n $token_file ]] || usage
[[ $broker == https://* || $broker == http://* ]] || { echo "install.sh: --broker must be an http(s) URL" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "install.sh: run as root" >&2; exit 1; }
[[ -f $HERE/kubepam-agent.service ]] || { echo "install.sh: kubepam-agent.service not found next to $0" >&2; exit 1; }

# 1. the agent itself
if [[ ! -x $PREFIX_DIR/bin/kubepam ]]; then
  python3 -m venv "$PREFIX_DIR"
  "$PREFIX_DIR/bin/pip" install --quiet --disable-pip-version-check "${wheel:-kubepam}"
fi
"$PREFIX_DIR/bin/kubepam" agent --help >/dev/null

# 2. settings (the token file stays where it is: root-only, read once to enroll)
chmod 0600 "$token_file" 2>/dev/null || true
auth_log=/var/log/auth.log reload="systemctl reload ssh"
[[ -f /var/log/secure && ! -f /var/log/auth.log ]] && auth_log=/var/log/secure
systemctl cat ssh.service >/dev/null 2>&1 || reload="systemctl reload sshd"
umask 077
{
  echo "# written by kubepam install.sh; see: kubepam agent --help"
  printf 'KUBEPAM_BROKER=%s\n' "$broker"
  printf 'KUBEPAM_AGENT_NAMESPACE=%s\n' "$namespace"
  printf 'KUBEPAM_AGENT_PROJECT=%s\n' "$project"
  printf 'KUBEPAM_AGENT_TOKEN_FILE=%s\n' "$token_file"
  printf 'KUBEPAM_AGENT_PREFIX=%s\n' "$prefix"
  printf 'KUBEPAM_AGENT_AUTH_LOG=%s\n' "$auth_log"
  printf 'KUBEPAM_AGENT_RELOAD_SSHD=%s\n' "$reload"
} >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
umask 022

# 3. the unit
install -m 0644 "$HERE/kubepam-agent.service" "$UNIT"

# 4. sshd: trust the project's user CA keys, principals per local account
install -d -m 0755 "$SSHD_DIR" "$SSHD_DIR/principals" /etc/ssh/sshd_config.d
[[ -f $SSHD_DIR/trusted_user_ca_keys.pub ]] || install -m 0644 /dev/null "$SSHD_DIR/trusted_user_ca_keys.pub"
cat >"$SSHD_DROPIN" <<CONF
# kubepam-agent: certificates signed by the project's SSH CA log in as the accounts the agent manages
TrustedUserCAKeys $SSHD_DIR/trusted_user_ca_keys.pub
AuthorizedPrincipalsFile $SSHD_DIR/principals/%u
CONF
chmod 0644 "$SSHD_DROPIN"
if ! grep -Eqs '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\.d/' /etc/ssh/sshd_config; then
  echo "install.sh: warning: /etc/ssh/sshd_config does not Include sshd_config.d/*.conf; add the lines of $SSHD_DROPIN to it" >&2
fi
sshd -t
$reload || echo "install.sh: warning: '$reload' failed; sshd picks the settings up at its next start" >&2

# 5. run it
systemctl daemon-reload
if [[ $start -eq 1 ]]; then
  systemctl enable --now kubepam-agent.service
  echo "kubepam-agent enabled and started; logs: journalctl -u kubepam-agent"
else
  systemctl enable kubepam-agent.service
  echo "kubepam-agent enabled; it starts (and enrolls) at the next boot"
fi
