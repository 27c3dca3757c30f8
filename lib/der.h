/*
 * der.h: concatenated DER certificates (the Workload API's x509_svid and
 * bundle fields, SPEC §3), and PEM text of many certificates.
 *
 * A chain is leaf first, each certificate's DER right after the previous
 * one's, with nothing between or after. It is walked by each element's
 * own length (never by guessing), and refused when empty, when anything
 * trails the last certificate, when one certificate is over
 * LY_CERT_DER_MAX, or when the count or total size is over the caller's
 * caps (LY_CHAIN_* for SVID chains, LY_BUNDLE_* for trust bundles, see
 * caps.h). Over a cap is LY_E_LIMIT; malformed is LY_E_INVALID.
 *
 * Two levels:
 *  - ly_der_split(): the cheap one. Checks each element's DER header
 *    (a SEQUENCE with a definite, minimally encoded length) and reports
 *    (offset, length) of each, without parsing anything else and without
 *    OpenSSL objects: for caches that keep DER views.
 *  - ly_der_parse_certs(): split, then d2i_X509 each element, refusing an
 *    element that does not decode to exactly its own bytes.
 *
 * Ownership: struct ly_buf outputs are caller-owned (free with
 * ly_buf_free; `out` must be empty on entry and stays empty on failure).
 * A STACK_OF(X509) returned belongs to the caller: free it with
 * sk_X509_pop_free(sk, X509_free). Spans point into the caller's input
 * and live as long as it.
 */
#ifndef LANYARD_DER_H
#define LANYARD_DER_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "buf.h"
#include "caps.h"
#include "error.h"

/* One certificate inside a concatenation: der + off, len bytes. */
struct ly_der_span {
	size_t off;
	size_t len;
};

/* A borrowed run of bytes (one or more whole DER certificates). */
struct ly_der_view {
	const uint8_t *der;
	size_t len;
};

/*
 * Splits `len` bytes of concatenated DER certificates. At most `max_certs`
 * elements (LY_E_LIMIT past that) and `max_total` bytes in all. `spans`
 * may be NULL (only count) or must hold `max_certs` entries; *count gets
 * the number of certificates.
 */
ly_status ly_der_split(const uint8_t *der, size_t len, size_t max_certs, size_t max_total,
    struct ly_der_span *spans, size_t *count, struct ly_error *err) LY_MUST_CHECK;

/*
 * Splits and parses. *out gets a new stack of `count` certificates in
 * input order. Messages name the certificate: "certificate 2: ...".
 */
ly_status ly_der_parse_certs(const uint8_t *der, size_t len, size_t max_certs, size_t max_total,
    STACK_OF(X509) **out, struct ly_error *err) LY_MUST_CHECK;

/* ly_der_parse_certs() with the chain caps (LY_CHAIN_CERTS_MAX, LY_CHAIN_DER_MAX). */
ly_status ly_der_parse_chain(const uint8_t *der, size_t len, STACK_OF(X509) **out, struct ly_error *err)
    LY_MUST_CHECK;
/* ly_der_parse_certs() with the bundle caps (LY_BUNDLE_CERTS_MAX, LY_BUNDLE_DER_MAX). */
ly_status ly_der_parse_bundle(const uint8_t *der, size_t len, STACK_OF(X509) **out, struct ly_error *err)
    LY_MUST_CHECK;

/* Exactly one certificate in `len` bytes (no trailing bytes). *out: X509_free. */
ly_status ly_der_parse_one(const uint8_t *der, size_t len, X509 **out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Concatenates `n` parts, each one or more whole certificates (checked
 * with ly_der_split), into `out`, within `max_certs` and `max_total`.
 */
ly_status ly_der_concat(const struct ly_der_view *parts, size_t n, size_t max_certs, size_t max_total,
    struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

/* DER-encodes each certificate of `certs` into one concatenation in `out`. */
ly_status ly_der_from_x509s(const STACK_OF(X509) *certs, size_t max_total, struct ly_buf *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * PEM text -> concatenated DER. Every PEM block must be a "CERTIFICATE"
 * holding exactly one DER certificate; other blocks (keys, CRLs, "TRUSTED
 * CERTIFICATE"), PEM headers and bad base64 are refused; text outside the
 * blocks is ignored. At least one certificate, at most `max_certs`, total
 * DER at most `max_total`, PEM at most LY_PEM_FILE_MAX bytes. `pem` need
 * not be NUL-terminated.
 */
ly_status ly_pem_to_der_certs(const char *pem, size_t len, size_t max_certs, size_t max_total,
    struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

/* ly_pem_to_der_certs() on the contents of file `path`. */
ly_status ly_pem_file_to_der_certs(const char *path, size_t max_certs, size_t max_total, struct ly_buf *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Concatenated DER -> PEM, one "CERTIFICATE" block per certificate, in one
 * exact-size allocation, NUL-terminated (out->len excludes the NUL).
 */
ly_status ly_der_certs_to_pem(const uint8_t *der, size_t len, size_t max_certs, size_t max_total,
    struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

/*
 * Encodes `len` (> 0) bytes as one PEM block "-----BEGIN <label>-----",
 * base64 in 64-column lines, in one exact-size allocation, NUL-terminated
 * (out->len excludes the NUL). Safe for secrets: nothing is copied
 * elsewhere, so ly_buf_free_secret(out) wipes the only copy.
 */
ly_status ly_pem_encode(const char *label, const uint8_t *der, size_t len, struct ly_buf *out,
    struct ly_error *err) LY_MUST_CHECK;

/*
 * Reads a whole (PEM) file of at most LY_PEM_FILE_MAX bytes into `out`,
 * NUL-terminated (out->len excludes the NUL). Read into one allocation
 * sized from the file, so when it holds a key, ly_buf_free_secret(out)
 * wipes the only copy we made. LY_E_IO when it cannot be read.
 */
ly_status ly_pem_read_file(const char *path, struct ly_buf *out, struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_DER_H */
