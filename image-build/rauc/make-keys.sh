#!/usr/bin/env bash
# Makes a small RAUC signing PKI: a CA (its certificate goes into the image as /etc/rauc/ca.cert.pem) and a
# signing key with a certificate issued by it (signs the bundles).
#
#   make-keys.sh DIR [NAME]
#
# Writes DIR/ca.key.pem, ca.cert.pem, signing.key.pem, signing.cert.pem. build.sh calls it for a throwaway CA
# when no --keys are given; the boot test calls it again for a stranger's key. For production keys see
# image-build/README.md ("Update keys"): the CA key belongs offline, only the signing key on the build machine.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: make-keys.sh DIR [NAME]" >&2; exit 2; }
dir=$1
# Subject names: '+' and '/' mean something to openssl -subj; version strings carry '+'.
name=$(printf '%s' "${2:-Perch update signing}" | tr -c 'A-Za-z0-9 ._-' '_')
mkdir -p "$dir"
chmod 0700 "$dir"
cd "$dir"
ext=$(mktemp)
trap 'rm -f "$ext" signing.csr.pem' EXIT
cat >"$ext" <<'CONF'
[ca]
basicConstraints=critical,CA:true
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
[signing]
basicConstraints=critical,CA:false
keyUsage=critical,digitalSignature
# RAUC checks this with check-purpose=codesign (/etc/rauc/system.conf).
extendedKeyUsage=critical,codeSigning
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
CONF
quiet() {  # openssl's chatter only when it fails
  local err
  err=$("$@" 2>&1 >/dev/null) || { echo "$err" >&2; return 1; }
}
quiet openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -days 7300 \
  -keyout ca.key.pem -out ca.cert.pem -subj "/O=Perch/CN=$name CA" -extensions ca -config "$ext"
quiet openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
  -keyout signing.key.pem -out signing.csr.pem -subj "/O=Perch/CN=$name"
quiet openssl x509 -req -in signing.csr.pem -CA ca.cert.pem -CAkey ca.key.pem -CAcreateserial -sha256 -days 3650 \
  -extfile "$ext" -extensions signing -out signing.cert.pem
rm -f ca.cert.srl
chmod 0600 ca.key.pem signing.key.pem
