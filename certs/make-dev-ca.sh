#!/usr/bin/env bash
# make-dev-ca.sh: a development PKI for Lanyard, made with the openssl
# command line (certs/README.md):
#
#   upstream-ca.pem, upstream-ca.key   an EC P-256 root CA for lanyard-server's
#                                      upstream_ca (cert_file, key_file)
#   node-ca.pem, node-ca.key           an EC P-256 CA for the x509pop node
#                                      attestor (server: ca_bundle_path)
#   node.pem, node.key                 a node certificate issued by node-ca for
#                                      lanyard-agent's x509pop attestor
#   node.spiffe-id                     the SPIFFE ID the agent gets with it
#
# Usage: make-dev-ca.sh [-t TRUST_DOMAIN] [-n NODE_NAME] [-d DAYS] [-f] [DIR]
#   DIR            where the files go (default: certs/dev next to this script;
#                  created 0700)
#   -t TD          trust domain, for the printed agent SPIFFE ID (example.org)
#   -n NAME        the node's name: subject CN and DNS SAN (default: node1)
#   -d DAYS        validity of the CAs (default 365; the node cert: 90 at most)
#   -f             replace existing files (default: refuse, keys untouched)
#
# Keys are PKCS#8 PEM, 0600, created under umask 077 so they are never
# readable by others; certificates are 0644. Not for production: the CA keys
# sit in plain files.
set -euo pipefail

td=example.org
node=node1
days=365
force=0
usage() {
	echo "usage: $0 [-t TRUST_DOMAIN] [-n NODE_NAME] [-d DAYS] [-f] [DIR]" >&2
	exit 2
}
while getopts "t:n:d:fh" opt; do
	case $opt in
	t) td=$OPTARG ;;
	n) node=$OPTARG ;;
	d) days=$OPTARG ;;
	f) force=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage
dir=${1:-$(cd "$(dirname "$0")" && pwd)/dev}

case $days in
'' | *[!0-9]* | 0*) echo "$0: -d: days must be a positive number" >&2; exit 2 ;;
esac
[ "$days" -le 3650 ] || { echo "$0: -d: at most 3650 days" >&2; exit 2; }
# The trust domain as SPEC §1 says: lower case [a-z0-9._-].
case $td in
'' | *[!a-z0-9._-]*) echo "$0: -t: trust domain \"$td\" must be lower case [a-z0-9._-]" >&2; exit 2 ;;
esac
# A DNS label sequence: the name becomes a DNS SAN and a selector value.
case $node in
'' | *[!a-z0-9.-]* | .* | *. | -*) echo "$0: -n: node name \"$node\" must be a DNS name (lower case)" >&2; exit 2 ;;
esac
node_days=$((days < 90 ? days : 90))

command -v openssl >/dev/null || { echo "$0: openssl not found (apt-get install openssl)" >&2; exit 1; }

umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
files="upstream-ca.pem upstream-ca.key node-ca.pem node-ca.key node.pem node.key node.spiffe-id"
if [ "$force" -eq 0 ]; then
	for f in $files; do
		if [ -e "$dir/$f" ]; then
			echo "$0: $dir/$f exists: refusing to replace it (-f replaces)" >&2
			exit 1
		fi
	done
fi

work=$(mktemp -d "$dir/.make-dev-ca.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat >"$work/ext.cnf" <<EOF
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused

# A CA: basicConstraints critical with cA true, keyUsage critical with
# keyCertSign (X509-SVID §4.1, §4.3: what lanyard-server checks for every
# certificate of the upstream chain and what the agents check in the
# bundle), key identifiers (OpenSSL's strict verification wants them).
[ ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

# An x509pop node certificate: not a CA, digitalSignature (the server's
# x509pop attestor requires it: the agent signs its challenge with this
# key), clientAuth, the node name as a DNS SAN (selector x509pop:san:dns:).
[ node ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = DNS:$node
EOF

newkey() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve \
		-out "$1" 2>/dev/null
	chmod 0600 "$1"
}

# 16 random bytes, positive: a serial as RFC 5280 §4.1.2.2 wants.
serial() {
	echo "0x7$(openssl rand -hex 15)"
}

# The upstream root.
newkey "$work/upstream-ca.key"
openssl req -new -x509 -config "$work/ext.cnf" -extensions ca -key "$work/upstream-ca.key" -sha256 \
	-subj "/O=Lanyard development/CN=Lanyard development upstream CA" -days "$days" -set_serial "$(serial)" \
	-out "$work/upstream-ca.pem"

# The x509pop node CA and one node certificate under it.
newkey "$work/node-ca.key"
openssl req -new -x509 -config "$work/ext.cnf" -extensions ca -key "$work/node-ca.key" -sha256 \
	-subj "/O=Lanyard development/CN=Lanyard development node CA" -days "$days" -set_serial "$(serial)" \
	-out "$work/node-ca.pem"
newkey "$work/node.key"
openssl req -new -config "$work/ext.cnf" -key "$work/node.key" -subj "/O=Lanyard development/CN=$node" \
	-out "$work/node.csr"
openssl x509 -req -in "$work/node.csr" -CA "$work/node-ca.pem" -CAkey "$work/node-ca.key" -sha256 \
	-extfile "$work/ext.cnf" -extensions node -days "$node_days" -set_serial "$(serial)" \
	-out "$work/node.pem" 2>/dev/null

# Check what was made before anything replaces older files.
openssl verify -x509_strict -CAfile "$work/upstream-ca.pem" "$work/upstream-ca.pem" >/dev/null
openssl verify -x509_strict -CAfile "$work/node-ca.pem" "$work/node.pem" >/dev/null

# The agent's ID: spiffe://TD/lanyard/agent/x509pop/<SHA-1 of the node
# certificate, lower-case hex> (server/attest.h).
sha1=$(openssl x509 -in "$work/node.pem" -noout -fingerprint -sha1 | sed 's/.*=//; s/://g' | tr 'A-F' 'a-f')
echo "spiffe://$td/lanyard/agent/x509pop/$sha1" >"$work/node.spiffe-id"

chmod 0644 "$work"/*.pem "$work/node.spiffe-id"
for f in $files; do
	mv -f "$work/$f" "$dir/$f"
done

cat <<EOF
Wrote to $dir:
  upstream-ca.pem, upstream-ca.key   upstream CA (server: upstream_ca.cert_file / key_file; agents: -trustBundle upstream-ca.pem)
  node-ca.pem, node-ca.key           x509pop node CA (server: node_attestors.x509pop.ca_bundle_path)
  node.pem, node.key                 node certificate for $node (agent: node_attestor.x509pop.certificate_path / private_key_path)
Agent SPIFFE ID with node.pem: $(cat "$dir/node.spiffe-id")
EOF
