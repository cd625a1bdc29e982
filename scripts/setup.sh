#!/usr/bin/env bash
# Set up vscen on Debian/Ubuntu, as root: system packages, a virtual environment in .venv with
# vscen installed (libvirt-python is built against the installed libvirt), and with --daemons
# the real libvirt/QEMU stack started by hand (there may be no systemd).
#
#   bash scripts/setup.sh            # enough for the embedded test:///default driver
#   bash scripts/setup.sh --daemons  # plus libvirtd, virtlogd, QEMU, OVMF, swtpm (tests, real guests)
set -euo pipefail
cd "$(dirname "$0")/.."
daemons=no
for arg in "$@"; do
  case "$arg" in
    --daemons) daemons=yes ;;
    *) echo "usage: $0 [--daemons]" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "error: run as root (it installs packages with apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

pkgs=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev libvirt0 libxml2-utils osinfo-db)
if [ "$daemons" = yes ]; then
  pkgs+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
         ovmf swtpm swtpm-tools dnsmasq-base iptables
         libvirt-clients-qemu genisoimage
         linux-image-cloud-amd64 busybox-static)  # a tiny guest reads its cloud-init seed (tests)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$daemons" = yes ] && ! ls /var/cache/vscen-tests/cloud-init/cloud-init_*.deb >/dev/null 2>&1; then
  # Debian's cloud-init and the Python packages it needs, for the cloud-init plugin's guest
  # test, which unpacks them into a tiny root file system: downloaded, never installed here
  mkdir -p /var/cache/vscen-tests/cloud-init
  (cd /var/cache/vscen-tests/cloud-init && apt-get download -qq cloud-init python3-jinja2 python3-markupsafe \
     python3-jsonschema python3-attr python3-pyrsistent python3-configobj python3-six python3-jsonpatch \
     python3-json-pointer python3-netifaces python3-requests python3-urllib3 python3-idna python3-certifi \
     python3-chardet python3-charset-normalizer python3-serial python3-yaml python3-oauthlib python3-blinker \
     python3-jwt 2>/dev/null)
fi

if [ "$daemons" = yes ]; then
  # Debian's qemu driver resolves its compiled-in user/group 'libvirt-qemu' at start-up even
  # when qemu.conf overrides it; libvirt-daemon-system would create them, but it drags in
  # systemd, useless where systemd is not PID 1.
  getent group kvm          >/dev/null || groupadd --system kvm
  getent group libvirt      >/dev/null || groupadd --system libvirt
  getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
  getent passwd libvirt-qemu >/dev/null || useradd --system -g kvm -G libvirt-qemu \
    -d /var/lib/libvirt -M -s /usr/sbin/nologin libvirt-qemu
  mkdir -p /etc/libvirt /var/log/libvirt/qemu /var/lib/libvirt/images
  # guests run as root (/dev/kvm may be root-only), with no AppArmor/SELinux driver
  [ -s /etc/libvirt/qemu.conf ] || \
    printf 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n' > /etc/libvirt/qemu.conf
  alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
  alive /run/virtlogd.pid || virtlogd -d
  alive /run/libvirtd.pid || libvirtd -d
  # the first connection probes QEMU's capabilities (about 8 s cold, cached afterwards)
  for _ in $(seq 1 60); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 1
  done
  virsh -c qemu:///system version >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' tox
echo "vscen is set up: $(.venv/bin/vscen --version) in $(pwd)/.venv"
