#!/usr/bin/env bash
# make_test_certs.sh DIR - a test CA and certificates, with the openssl
# command, for the TLS tests and for trying the TLS servers by hand:
#   ca.pem, ca.key           a CA the tests trust
#   server.pem, server.key   for "localhost" and 127.0.0.1 / ::1, by the CA
#   wrong.pem, wrong.key     for "wrong.example" only, by the CA
#   other-ca.pem             a second CA nobody trusts, and
#   stranger.pem, .key       a "localhost" certificate it signed
#   client.pem, client.key   a client certificate, by the CA
# Keys are P-256 (fast to make); everything is valid for 30 days.
set -euo pipefail
dir=${1:?usage: make_test_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
days=30
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
          -out "$1" 2>/dev/null; }
ca() { # name subject
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days $days \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign -out "$1.pem" 2>/dev/null
}
leaf() { # name ca subject-alt-names extended-key-usage
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" \
    -CAcreateserial -days $days -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca "ursa test CA"
ca other-ca "a CA nobody trusts"
leaf server ca "DNS:localhost,IP:127.0.0.1,IP:::1" serverAuth
leaf wrong ca "DNS:wrong.example" serverAuth
leaf stranger other-ca "DNS:localhost,IP:127.0.0.1" serverAuth
leaf client ca "DNS:client" clientAuth
rm -f ./*.srl
echo "make_test_certs: certificates in $dir"
