#!/bin/sh
# ca_openssl_verify.sh: chains issued by the server's CA, checked by the
# openssl command line (another implementation than ours):
#   openssl verify -x509_strict -purpose sslserver|sslclient
#       -CAfile bundle.pem -untrusted intermediates.pem leaf.pem
# for CA keys P-256, P-384 and RSA-2048; `openssl x509 -text` shows the
# URI SAN and the X509-SVID extensions; across a rotation, leaves of the old
# and the new signing CA verify against the bundle, and an old leaf does not
# verify against the successor's root alone.
#
#   ca_openssl_verify.sh PATH/TO/ca_openssl_verify
set -eu

prog=$1
dir=$(mktemp -d /tmp/lanyard-ca-openssl-XXXXXX)
trap 'rm -rf "$dir"' EXIT INT TERM
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

"$prog" "$dir"

verify() { # bundle intermediates leaf purpose
	openssl verify -x509_strict -purpose "$4" -CAfile "$dir/$1" -untrusted "$dir/$2" "$dir/$3"
}

for kt in ec-p256 ec-p384 rsa-2048; do
	for purpose in sslserver sslclient; do
		out=$(verify "$kt-bundle.pem" "$kt-intermediates.pem" "$kt-leaf.pem" "$purpose" 2>&1) ||
			fail "$kt $purpose: $out"
		[ "$out" = "$dir/$kt-leaf.pem: OK" ] || fail "$kt $purpose: $out"
	done
	text=$(openssl x509 -in "$dir/$kt-leaf.pem" -noout -text)
	for want in \
		'URI:spiffe://example.org/ns/prod/sa/web, DNS:web.example.org, DNS:web.prod.svc' \
		'CA:FALSE' \
		'X509v3 Key Usage: critical' \
		'Digital Signature' \
		'TLS Web Server Authentication, TLS Web Client Authentication' \
		'Subject: CN = web.example.org' \
		'X509v3 Subject Key Identifier' \
		'X509v3 Authority Key Identifier'; do
		printf '%s\n' "$text" | grep -qF "$want" || fail "$kt: openssl x509 -text lacks \"$want\""
	done
	ca=$(openssl x509 -in "$dir/$kt-intermediates.pem" -noout -text)
	for want in 'CA:TRUE, pathlen:0' 'Certificate Sign, CRL Sign' 'URI:spiffe://example.org'; do
		printf '%s\n' "$ca" | grep -qF "$want" || fail "$kt signing CA: openssl x509 -text lacks \"$want\""
	done
	echo "ok: $kt"
done

for which in old new; do
	out=$(verify rot-bundle.pem "rot-$which-intermediates.pem" "rot-$which-leaf.pem" sslserver 2>&1) ||
		fail "rotation, $which leaf: $out"
done
if verify rot-new-root.pem rot-old-intermediates.pem rot-old-leaf.pem sslserver >/dev/null 2>&1; then
	fail "rotation: the old leaf verified against the successor's root alone"
fi
verify rot-new-root.pem rot-new-intermediates.pem rot-new-leaf.pem sslserver >/dev/null ||
	fail "rotation: the new leaf does not verify against its own root"
cmp -s "$dir/rot-old-intermediates.pem" "$dir/rot-new-intermediates.pem" &&
	fail "rotation: the same signing CA before and after"
echo "ok: rotation"
