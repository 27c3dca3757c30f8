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
/* Signing paths (intermediates) a verifier keeps verified per bundle version (agent/verify.c). */
#define LY_VERIFY_SIGNERS_MAX 8
/* A PEM file we read (bundle, key, certificate). */
#define LY_PEM_FILE_MAX (4 * 1024 * 1024)
/* A private key's DER (RSA-4096 PKCS#8 is ~2.4 KB). */
#define LY_KEY_DER_MAX (8 * 1024)
/* A CSR's DER. */
#define LY_CSR_DER_MAX (8 * 1024)
/* RSA modulus size accepted in keys, CSRs and certificates (verify cost). */
#define LY_RSA_BITS_MAX 8192
/* DNS SANs in one CSR or SVID, and one DNS name (RFC 1035: 253 bytes). */
#define LY_DNS_NAMES_MAX 32
#define LY_DNS_NAME_MAX 253

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
#define LY_CONFIG_DEPTH_MAX 6
#define LY_CONFIG_VALUE_MAX 4096
/* A configuration key as a dotted path ("server.node_attestors.k8s_psat.cluster"). */
#define LY_CONFIG_KEY_MAX 256

/* One log line, after formatting. */
#define LY_LOG_LINE_MAX 2048

/* Trust bundles held at once (ours and federated ones), and one JWK's
 * base64url RSA exponent in bytes (RSA_MAX_PUBEXP_BITS is 64). */
#define LY_BUNDLE_SET_MAX 1024
#define LY_JWK_RSA_E_MAX 8

/*
 * Registration entries (SPEC §1, §5, §6): one selector "type:value" in all,
 * and the selectors one entry (or one attested agent) may hold.
 */
#define LY_SELECTOR_MAX 1024
#define LY_SELECTORS_MAX 64
/*
 * SVID TTLs an entry may ask for, in seconds (0 means the server default of
 * SPEC §7). X.509 up to 30 days; JWT up to 1 day, since a JWT-SVID is a
 * bearer token that cannot be revoked before it expires.
 */
#define LY_X509_SVID_TTL_MAX (30 * 24 * 60 * 60)
#define LY_JWT_SVID_TTL_MAX (24 * 60 * 60)
/*
 * And at least (entries being created or updated, the server's defaults).
 * X.509: an SVID of TTL T is backdated by min(T/4, 300) s (server/ca.c,
 * whole seconds) and renewed in [45%, 55%] of notBefore..notAfter
 * (agent/rotation.h), i.e. 0.31 T to 0.44 T after it is issued: each entry
 * costs a signature every third of its TTL. X.509 times have one-second
 * resolution, so at T = 1 (no backdate) an SVID can reach the agent
 * already expired; a waiting stream asks again at once, without end
 * (measured: 316 issuances/s with one stream open; the attack run saw
 * ~245/s and ~24% CPU per daemon). T = 3: 1/s, 10: 0.3/s. At the floor of
 * 20 s the renewal comes 6.25-8.75 s after issuance, more than one agent
 * sync interval (LY_AGENT_SYNC_INTERVAL_DEFAULT, 5 s), batched with what
 * else is due within 100 ms, 11 s of life are left after the 55% mark for
 * retries (1 s doubling), and the second lost to rounding is under 5% of
 * the life (measured: 0.13 issuances/s). 20 s is also the shortest TTL our
 * own rotation tests use. SPIRE has no floor, only the cap at the signing
 * CA's notAfter (as ours, server/ca.h). JWT: validators accept a JWT-SVID
 * LY_JWT_LEEWAY_SECONDS past its exp, so a shorter TTL shortens nothing
 * for whoever holds the token, and the agent caches one for half its life:
 * under the leeway every fetch would be a signature on the server.
 */
#define LY_X509_SVID_TTL_MIN 20
#define LY_JWT_SVID_TTL_MIN LY_JWT_LEEWAY_SECONDS
/* An entry's DNS names go into its SVIDs: LY_DNS_NAMES_MAX and LY_DNS_NAME_MAX above. */
/* An entry ID ([A-Za-z0-9._-]) and an entry's hint. */
#define LY_ENTRY_ID_MAX 64
#define LY_ENTRY_HINT_MAX 255
/* A join token (SPEC §6). */
#define LY_JOIN_TOKEN_MAX 256
/* The datastore's CA state: one name, one value. */
#define LY_CA_STATE_NAME_MAX 128
#define LY_CA_STATE_MAX (1024 * 1024)

/*
 * gRPC (rpc/): one message received by either side (gRPC's own default is
 * 4 MiB), and the highest fd number ly_rpc_server_add_fd accepts (the
 * connection table is indexed by fd).
 */
#define LY_RPC_MSG_MAX (4 * 1024 * 1024)
#define LY_RPC_FD_MAX 65536

/*
 * Node attestation (SPEC §6). x509pop: a proof-of-possession signature
 * (an RSA-8192 signature is 1024 bytes). k8s_psat: the agent's projected
 * service-account token and the server's own token file (JWTs), one
 * Kubernetes API response (a Node with its image list can be large), the
 * JSON nesting of such a response (managedFields nest deeper than
 * LY_JSON_DEPTH_MAX), clusters configured and allow-list entries per cluster.
 */
#define LY_X509POP_SIG_MAX 1024
#define LY_K8S_TOKEN_MAX (16 * 1024)
#define LY_K8S_RESPONSE_MAX (1024 * 1024)
#define LY_K8S_JSON_DEPTH_MAX 64
#define LY_K8S_CLUSTERS_MAX 64
#define LY_K8S_ALLOW_MAX 256

/*
 * The server's CA (server/ca.c): slot files it loads from <dataDir>/ca
 * (a handful in normal operation: old, current and next of each kind),
 * one slot file's size, and the CSRs one ly_ca_sign_batch call signs.
 */
#define LY_CA_SLOTS_MAX 32
#define LY_CA_SLOT_FILE_MAX (64 * 1024)
#define LY_CA_BATCH_MAX 1024

/*
 * Workload attestation in the agent (agent/, SPEC §5). /proc files read for
 * one caller: stat (one line: comm is at most 64 bytes), cgroup and
 * mountinfo. The executable hashed for unix:sha256 (the default of a
 * setting that may only lower it; a larger file gets no sha256 selector)
 * and the entries of the hash cache. The selectors one workload may get.
 * The kubelet's /pods answer: its size, its JSON nesting (managedFields
 * nest deep: LY_K8S_JSON_DEPTH_MAX above), pods in it, container statuses
 * of one kind per pod and labels per pod.
 */
#define LY_PROC_STAT_MAX 4096
#define LY_PROC_CGROUP_MAX (64 * 1024)
#define LY_PROC_MOUNTINFO_MAX (1024 * 1024)
#define LY_UNIX_EXE_HASH_MAX (256ULL * 1024 * 1024)
#define LY_UNIX_HASH_CACHE_MAX 1024
#define LY_WORKLOAD_SELECTORS_MAX 512
#define LY_K8S_PODLIST_MAX (16 * 1024 * 1024)
#define LY_K8S_PODS_MAX 4096
#define LY_K8S_CONTAINERS_MAX 256
#define LY_K8S_LABELS_MAX 256

/*
 * The agent's cache and persisted state (agent/cache.c, agent/state.c,
 * SPEC §4): registration entries one agent holds (so the SVIDs it caches),
 * cached JWT-SVIDs, and one state file in -dataDir (10,000 cached SVIDs
 * take ~12 MB). Requests a workload sends to the Workload API (SPEC §3,
 * agent/workload_msg.c): one message, and one audience in it.
 */
#define LY_AGENT_ENTRIES_MAX 100000
#define LY_AGENT_JWT_CACHE_MAX 4096
#define LY_AGENT_STATE_FILE_MAX (256 * 1024 * 1024)
#define LY_WORKLOAD_REQUEST_MAX (64 * 1024)
#define LY_JWT_AUDIENCE_MAX 1024

/*
 * Envoy SDS v3 on the Workload API socket (agent/sds_msg.c, issue 14): one
 * DiscoveryRequest (Envoy's Node lists every extension it was built with:
 * tens of KB), the resource names in it, one name (a SPIFFE ID at most),
 * its version_info and response_nonce, and a NACK's error message.
 */
#define LY_SDS_REQUEST_MAX (1024 * 1024)
#define LY_SDS_NAMES_MAX 1024
#define LY_SDS_NAME_MAX LY_SPIFFE_ID_MAX
#define LY_SDS_VERSION_MAX 256
#define LY_SDS_ERROR_MAX (64 * 1024)

/*
 * The Workload API (agent/wapi.c): connections open at once (each holds a
 * socket, a pidfd and its selectors; past this, new ones are closed at
 * accept and clients retry: Workload Endpoint §6 load shedding).
 */
#define LY_WAPI_CONNS_MAX 8192
/* A server connection must finish its TLS and HTTP/2 handshake within this (rpc/, slowloris). */
#define LY_RPC_HANDSHAKE_TIMEOUT_MS 10000

/*
 * The workload client library (lib/workload/, include/lanyard/workload.h):
 * SVIDs one Workload API response may carry (X.509 or JWT) before the
 * library refuses it; bundles are capped by LY_BUNDLE_SET_MAX.
 */
#define LY_WL_SVIDS_MAX 1024

/*
 * Health and metrics listener (lib/httpmini.h, lib/metrics.h): one request's
 * request line plus headers, header lines, and a metric family's series.
 */
#define LY_HTTP_REQUEST_MAX (8 * 1024)
#define LY_HTTP_HEADERS_MAX 64
#define LY_METRIC_SERIES_MAX 256

/*
 * `lanyard-agent api watch -write` (agent/cli_helper.h): a pid file's size
 * (one decimal pid and a newline), and the files one update writes (three
 * per SVID, plus its federated bundles).
 */
#define LY_PID_FILE_MAX 32
#define LY_WRITE_FILES_MAX 4096

#endif /* LANYARD_CAPS_H */
