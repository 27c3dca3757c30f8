/*
 * caps.h: every cap on input from outside, in one table (curl's rule).
 * A parser that meets a larger input refuses it with LY_E_LIMIT; nothing is
 * truncated silently. Change a number here, nowhere else.
 */
#ifndef LANYARD_CAPS_H
#define LANYARD_CAPS_H

/* SPIFFE-ID standard §2: a trust domain is at most 255 bytes. */
#define LY_TRUST_DOMAIN_MAX 255
/* SPIFFE-ID standard §2.3: URIs up to 2048 bytes must be accepted. */
#define LY_SPIFFE_ID_MAX 2048

/* X.509: one certificate's DER, and the certificates in one chain or bundle. */
#define LY_CERT_DER_MAX (16 * 1024)
#define LY_CHAIN_CERTS_MAX 16
#define LY_CHAIN_DER_MAX (LY_CHAIN_CERTS_MAX * LY_CERT_DER_MAX)
#define LY_BUNDLE_CERTS_MAX 256
#define LY_BUNDLE_DER_MAX (LY_BUNDLE_CERTS_MAX * LY_CERT_DER_MAX)
/* Verification depth: leaf, intermediates, root. */
#define LY_VERIFY_DEPTH_MAX 8
/* A PEM file we read (bundle, key, certificate). */
#define LY_PEM_FILE_MAX (4 * 1024 * 1024)
/* A private key's DER (RSA-4096 PKCS#8 is ~2.4 KB). */
#define LY_KEY_DER_MAX (8 * 1024)
/* A CSR's DER. */
#define LY_CSR_DER_MAX (8 * 1024)

/* JWT-SVID: the compact token, its decoded header and its decoded claims. */
#define LY_JWT_MAX (16 * 1024)
#define LY_JWT_HEADER_MAX 2048
#define LY_JWT_AUDIENCES_MAX 32
#define LY_JWT_KID_MAX 256
/* Clock skew tolerated when checking exp/nbf/iat, in seconds. */
#define LY_JWT_LEEWAY_SECONDS 30

/* A bundle document in the SPIFFE (JWKS) format. */
#define LY_JWKS_MAX (1024 * 1024)
#define LY_JWKS_KEYS_MAX 256

/* JSON nesting accepted anywhere we parse JSON. */
#define LY_JSON_DEPTH_MAX 16

/* A configuration file. */
#define LY_CONFIG_FILE_MAX (1024 * 1024)
#define LY_CONFIG_ENTRIES_MAX 1024
#define LY_CONFIG_DEPTH_MAX 4
#define LY_CONFIG_VALUE_MAX 4096

/* One log line, after formatting. */
#define LY_LOG_LINE_MAX 2048

#endif /* LANYARD_CAPS_H */
