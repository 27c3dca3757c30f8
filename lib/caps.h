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
/* 7: server.federation.bundle_endpoint.profile.https_web.serving_cert_file.cert_file_path (SPIRE's names). */
#define LY_CONFIG_DEPTH_MAX 7
#define LY_CONFIG_VALUE_MAX 4096
/* A configuration key as a dotted path ("server.node_attestors.k8s_psat.cluster"). */
#define LY_CONFIG_KEY_MAX 256

/* One log line, after formatting. */
#define LY_LOG_LINE_MAX 2048

/* Trust bundles held at once (ours and federated ones), and one JWK's
 * base64url RSA exponent in bytes (RSA_MAX_PUBEXP_BITS is 64). */
#define LY_BUNDLE_SET_MAX 1024
/*
 * Federation (SPEC §9): the trust domains one entry federates with, and a
 * relationship's bundle endpoint URL.
 */
#define LY_ENTRY_FEDERATES_WITH_MAX 32
#define LY_FED_URL_MAX 2048
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
 * The datastore off the loop (server/datastore_async.h): calls waiting for
 * the datastore's worker (past this many a new call is refused at once,
 * LY_E_LIMIT), and how long a call may take before its caller hears LY_E_IO
 * "datastore: no answer within 8000 ms ...". Longer than the back ends' own
 * limits (SQLite's busy timeout and PostgreSQL's statement_timeout, 5 s
 * each), so that their precise errors win when they come; shorter than the
 * CLI's 30 s and the agent's unary deadline.
 */
#define LY_DSA_QUEUE_MAX 1024
#define LY_DSA_DEADLINE_MS 8000

/*
 * gRPC (rpc/): one message received by either side (gRPC's own default is
 * 4 MiB), and the highest fd number ly_rpc_server_add_fd accepts (the
 * connection table is indexed by fd).
 */
#define LY_RPC_MSG_MAX (4 * 1024 * 1024)
/*
 * One response a daemon sends its own peer, and that peer receives. gRPC's
 * 4 MiB default kept a workload entitled to more than ~2,400 X.509-SVIDs
 * from getting any (the SPIRE benchmark, docs/benchmarks.md). An
 * X509SVIDResponse takes ~1.8 KB a SVID (the chain with the intermediate,
 * the key, the bundle repeated in every SVID), so 64 MiB holds ~35,000 for
 * one workload, and an SDS answer of all of them likewise; a WatchEntries
 * snapshot of LY_AGENT_ENTRIES_MAX entries (~250 bytes each) ~25 MB. Set
 * explicitly on the Workload API's server (its sends; the agent's
 * `workload_api.max_response_bytes` may lower it), the agent's channel to
 * the server (its receives) and the server's agent API (its sends); a
 * response still larger is answered RESOURCE_EXHAUSTED, never dropped.
 * Memory stays bounded: a stream holds at most one message in flight and
 * one queued (rpc/sendq.h). Requests stay under LY_RPC_MSG_MAX. (SPIRE
 * sets no limit: Go's servers send up to 2 GiB, its clients receive 4 MiB.)
 */
#define LY_RPC_RESPONSE_MAX (64 * 1024 * 1024)
/* The least `workload_api.max_response_bytes` may be: room for a few SVIDs with long chains. */
#define LY_WORKLOAD_RESPONSE_MIN (64 * 1024)
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
/*
 * The agent's servers (agent/servers.h, SPEC §10): items of the
 * -serverAddress list, and addresses in all (a DNS name may give several).
 */
#define LY_AGENT_SERVERS_MAX 32
#define LY_AGENT_SERVER_ADDRS_MAX 64
#define LY_AGENT_JWT_CACHE_MAX 4096
#define LY_AGENT_STATE_FILE_MAX (256 * 1024 * 1024)
#define LY_WORKLOAD_REQUEST_MAX (64 * 1024)
#define LY_JWT_AUDIENCE_MAX 1024
/*
 * The agent's server channel (agent/sync*.c): JWT-SVID requests waiting on
 * the server at once (beyond, refused: the workload retries); X.509 batches
 * in flight at once (while one is verified, the next one's keys and CSRs are
 * made and the server signs it); an EntriesUpdate this large (~1,000
 * entries) counts as a burst, after which memory is handed back.
 */
#define LY_AGENT_JWT_INFLIGHT_MAX 1024
#define LY_AGENT_ISSUE_INFLIGHT_MAX 2
#define LY_AGENT_WATCH_BURST_BYTES (256 * 1024)

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
 * Every gRPC server of both daemons (rpc/bridge.c; issue 19: stream floods,
 * idle connections; docs/security.md "Connection limits"):
 *  - LY_RPC_STREAMS_MAX: concurrent streams per HTTP/2 connection,
 *    advertised in SETTINGS_MAX_CONCURRENT_STREAMS. gRPC 1.51 enforces it
 *    only once the client acknowledged our SETTINGS;
 *  - LY_RPC_STREAMS_KILL: the bridge's backstop for a client that never
 *    acknowledges them: it counts calls per connection, and a connection
 *    with more than this many open is shut down (rpc/sockscan.h for TCP),
 *    its call refused (RESOURCE_EXHAUSTED). Twice the advertised limit, not
 *    the limit itself: the bridge counts a call until its last completion
 *    reaches the loop, which lags the stream's end on the wire, so a
 *    compliant client keeping 100 calls in flight is seen with a few more
 *    (measured: 101, the new call on top of 98 being served and 2 whose
 *    status was already on the wire, with the admin API on the datastore
 *    worker), and a client may open more before it has read our SETTINGS
 *    (RFC 9113 §6.5.2). Calls between the two are served, not refused,
 *    since they may be a compliant client's (tests/integration/rpc_streams.py);
 *  - LY_RPC_CONNS_PER_ADDR_MAX: TCP connections from one peer address,
 *    handshaking or not; checked once a second, the newest over it are
 *    shut down (rpc/sockscan.h);
 *  - LY_RPC_CALLS_PER_ADDR_MAX: calls open at once from one peer address
 *    over all its connections (TCP only; "fd:" connections are counted per
 *    uid instead, below); past it a new call is refused likewise;
 *  - LY_RPC_REQUEST_TIMEOUT_MS: a call whose one request message has not
 *    arrived by then is cancelled (a stream opened and left waiting);
 *  - LY_RPC_METADATA_MAX: request metadata (headers) per call; gRPC refuses more;
 *  - LY_RPC_IDLE_MS: a connection without a call for this long is closed
 *    (GOAWAY: a real client reconnects transparently);
 *  - LY_RPC_KEEPALIVE_MS / LY_RPC_KEEPALIVE_TIMEOUT_MS: a connection with
 *    calls open is pinged this often, and closed when the ping is not
 *    answered in time (a peer that vanished with streams open);
 *  - LY_RPC_MEMORY_MAX: the memory gRPC may account to one server's
 *    connections and calls (its resource quota); over it gRPC drops new
 *    connections at accept and reclaims (cancels) calls;
 *  - LY_RPC_REQUESTS_ARMED: grpc_server_request_call kept outstanding, so
 *    calls that arrive in a burst are matched at once instead of queueing
 *    inside gRPC;
 *  - LY_RPC_SWEEP_MS: how often the bridge checks the above;
 *  - LY_RPC_SHED_GROWTH_MAX: the memory guard. gRPC 1.51 has none of the
 *    rapid-reset fixes (CVE-2023-44487): streams opened and reset at once
 *    never reach us as calls, yet cost gRPC memory at hundreds of MB a
 *    second. When the daemon's resident memory grows this far above its
 *    recent level, every connection on which no call is being served is
 *    shut down (rpc/bridge.c rpc_memory_guard), except those that made a
 *    call with a verified client certificate (enrolled agents).
 */
#define LY_RPC_STREAMS_MAX 100
#define LY_RPC_STREAMS_KILL (2 * LY_RPC_STREAMS_MAX)
#define LY_RPC_CALLS_PER_ADDR_MAX 1000
#define LY_RPC_CONNS_PER_ADDR_MAX 256
#define LY_RPC_REQUEST_TIMEOUT_MS 10000
#define LY_RPC_METADATA_MAX (16 * 1024)
#define LY_RPC_IDLE_MS 30000
#define LY_RPC_KEEPALIVE_MS 60000
#define LY_RPC_KEEPALIVE_TIMEOUT_MS 20000
#define LY_RPC_MEMORY_MAX (256 * 1024 * 1024)
#define LY_RPC_REQUESTS_ARMED 32
#define LY_RPC_SWEEP_MS 100
#define LY_RPC_SHED_GROWTH_MAX (128ULL * 1024 * 1024)
#define LY_RPC_TRIM_MS 30000
/*
 * A peer address whose TCP connections the memory guard shed has, for
 * LY_RPC_SHED_PENALTY_MS, every connection serving no call shut down every
 * LY_RPC_PENALTY_SWEEP_MS (so a reconnection floods that long at most); addresses
 * remembered at once: LY_RPC_PENALTY_SLOTS (the oldest forgotten first).
 */
#define LY_RPC_SHED_PENALTY_MS 10000
/*
 * Bytes a client may have written before its connection was accepted,
 * summed over the connections handed to gRPC in one LY_RPC_SWEEP_MS (over
 * it, one the daemon does not keep is refused; rpc/bridge.c
 * handover_admit): gRPC parses them at once,
 * before the memory guard's next look (about 2,000 flood streams, 25 MiB
 * of gRPC's memory). A real client's first flight is a few hundred bytes.
 */
#define LY_RPC_HANDOVER_QUEUED_MAX (256 * 1024)
#define LY_RPC_PENALTY_SWEEP_MS 10
#define LY_RPC_PENALTY_SLOTS 64
/*
 * Workload API connections one uid may hold open at once (agent/wapi.c):
 * a local user cannot take the whole LY_WAPI_CONNS_MAX. Generous because
 * in Kubernetes every container running as root is uid 0 to the agent;
 * the memory a uid's connections can cost is bounded by LY_RPC_STREAMS_KILL,
 * LY_RPC_REQUEST_TIMEOUT_MS and the memory guard (LY_RPC_SHED_GROWTH_MAX).
 */
#define LY_WAPI_CONNS_PER_UID_MAX 1024
/*
 * A uid whose connections the memory guard shed (rpc/bridge.c: connections
 * entitled to no identity, serving no call, while memory jumps) has its new
 * connections closed at accept for this long: without it, each reconnection
 * would flood again before the guard's next look. Uids remembered at once:
 * LY_WAPI_PENALTY_SLOTS (the oldest is forgotten first).
 */
#define LY_WAPI_SHED_PENALTY_MS 10000
#define LY_WAPI_PENALTY_SLOTS 64

/*
 * Rate limits (lib/ratelimit.h; SPEC §11): keys one keyed limiter holds
 * (source IPs, agents, selector sets; the least recently used goes first),
 * a key's length (past it a key is cut), and the largest rate or burst a
 * configuration may ask for.
 */
#define LY_RATELIMIT_KEYS_MAX 65536
#define LY_RATELIMIT_KEY_MAX LY_SPIFFE_ID_MAX
#define LY_RATELIMIT_BURST_MAX 1000000
/* Selector sets the agent's Workload API limit remembers (agent.ratelimit.workload_api). */
#define LY_WAPI_RATELIMIT_KEYS 4096

/*
 * The workload client library (lib/workload/, include/lanyard/workload.h)
 * receives what the agent sends. An X509SVIDResponse or JWTSVIDResponse
 * of up to LY_WL_RESPONSE_MAX bytes (the agent's LY_RPC_RESPONSE_MAX,
 * 64 MiB: ~35,000 X.509-SVIDs at ~1.8 KB each), with at most
 * LY_WL_SVIDS_MAX SVIDs; the library's other responses (bundles,
 * ValidateJWTSVID) stay under LY_RPC_MSG_MAX. An SVID that can verify (a
 * P-256 leaf, its key and one root) takes at least ~1 KB, so the count
 * never refuses what the size allows; it is counted on the wire before
 * protobuf-c unpacks (ly_pb_count_field), because protobuf-c allocates a
 * struct per element and a response of tiny ones would cost many times
 * its size. Memory while a response is read: the message three times
 * (gRPC's slices, our copy, its unpacked form) and the context it becomes,
 * each SVID as OpenSSL objects (leaf, intermediate, key: ~16 KB, ten
 * times its ~1.6 KB on the wire; test_workload_x509): ~13x the response,
 * under 1 GiB at the cap; a source keeps the previous context until the
 * new one is whole. Bundles (and the CRLs, ignored) are capped by
 * LY_BUNDLE_SET_MAX.
 * LY_WL_AUTHZ_IDS_MAX: the SPIFFE IDs one authorizer may name
 * (lanyard_authorize_one_of).
 */
#define LY_WL_RESPONSE_MAX LY_RPC_RESPONSE_MAX
#define LY_WL_SVIDS_MAX 65536
#define LY_WL_AUTHZ_IDS_MAX 1024

/*
 * Health and metrics listener (lib/httpmini.h, lib/metrics.h): one request's
 * request line plus headers, header lines, and a metric family's series.
 */
#define LY_HTTP_REQUEST_MAX (8 * 1024)
#define LY_HTTP_HEADERS_MAX 64
#define LY_METRIC_SERIES_MAX 256
/*
 * The health listener's connections (rpc/health_http.h; issue 19: 70 idle
 * connections starved every probe): when full, a new connection closes the
 * oldest one that has sent nothing yet, preferring one at least
 * LY_HEALTH_EVICT_AGE_MS old; and the listen backlog, deep enough that a
 * probe's SYN is not dropped behind a burst of idle connections.
 */
#define LY_HEALTH_EVICT_AGE_MS 250
#define LY_HEALTH_BACKLOG 1024

/*
 * `lanyard-agent api watch -write` (agent/cli_helper.h): a pid file's size
 * (one decimal pid and a newline), and the files one update writes (three
 * per SVID, plus its federated bundles).
 */
#define LY_PID_FILE_MAX 32
#define LY_WRITE_FILES_MAX 4096

/* A process's pid (Linux's PID_MAX_LIMIT on 64-bit systems: no pid is larger). */
#define LY_PID_VALUE_MAX 4194304
/* A file name in a file set: [A-Za-z0-9._-], not starting with '.'. */
#define LY_FILESET_NAME_MAX 128

/*
 * Largest admin request: an entry at every cap (LY_SELECTORS_MAX selectors
 * of LY_SELECTOR_MAX bytes, LY_DNS_NAMES_MAX names, two IDs) is ~80 KiB.
 */
#define LY_ADMIN_REQUEST_MAX (256 * 1024)
/* One audit line, newline included (server/audit.h). */
#define LY_AUDIT_LINE_MAX 8192
/*
 * The shared audit trail in the datastore (server/datastore_audit.h):
 * server.audit_retention, how long a line is kept (default 30 days, at
 * least an hour, at most ten years), and the most lines kept whatever
 * their age, so that a flood of refused calls cannot fill the database.
 * Pruned on the datastore's worker every 10 minutes.
 */
#define LY_AUDIT_RETENTION_DEFAULT (30 * 24 * 3600)
#define LY_AUDIT_RETENTION_MIN 3600
#define LY_AUDIT_RETENTION_MAX (3650LL * 24 * 3600)
#define LY_AUDIT_ROWS_MAX 1000000
/*
 * An agent's attestation type and SVID serial number, as stored text
 * (datastore); the serial is lower-case hex (RFC 5280: at most 20 bytes),
 * the same bound the Agent API reads a presented certificate's with.
 */
#define LY_DS_AGENT_TYPE_MAX 64
#define LY_DS_AGENT_SERIAL_MAX 64
/*
 * The server's Agent API (server/agent_api*.c): pending attestations
 * (x509pop challenges and enrolment tickets), watch streams open at once,
 * k8s_psat attestations running or queued on the thread pool, the leaf PEM
 * read from a call's auth context, and the gRPC status details it sends.
 */
#define LY_AGENTAPI_PENDING_MAX 1024
#define LY_AGENTAPI_WATCHERS_MAX 65536
#define LY_AGENTAPI_PSAT_INFLIGHT_MAX 8
/* Agent records the Agent API keeps in memory (known agents, served while the datastore is unreachable). */
#define LY_AGENTAPI_KNOWN_MAX 100000
#define LY_AGENTAPI_LEAF_PEM_MAX (2 * LY_CERT_DER_MAX + 1024)
#define LY_GRPC_DETAILS_MAX 300
/* Extensions in one CSR looked through (duplicates are found among them). */
#define LY_CSR_EXTS_MAX 32

/* The health/metrics listener: connections at once; a request line's method and path. */
#define LY_HEALTH_CONNS_MAX 64
#define LY_HTTP_METHOD_MAX 16
#define LY_HTTP_PATH_MAX 256
/* Metrics: labels per series, histogram buckets, a metric's name, a label's value. */
#define LY_METRIC_LABELS_MAX 8
#define LY_METRIC_BUCKETS_MAX 32
#define LY_METRIC_NAME_MAX 128
#define LY_METRIC_LABEL_VALUE_MAX 256
/* Most values a list flag (-audience ...) takes; more is a usage error. */
#define LY_FLAG_LIST_MAX 256

/*
 * Selector values, lengths that come from the producing system
 * (lib/entry.c): a unix:path argument (PATH_MAX; LY_SELECTOR_MAX bounds it
 * first), a POSIX user or group name (useradd's portable names), an RFC
 * 1123 label (Kubernetes IsDNS1123Label) and subdomain
 * (IsDNS1123Subdomain), a Kubernetes label name, a container image, a
 * cluster name (the k8s_psat:cluster selector and configuration), an
 * X.520 common name (ub-common-name, in characters), a certificate serial
 * in hex (RFC 5280 §4.1.2.2: at most 20 octets).
 */
#define LY_SELECTOR_PATH_MAX 4096
#define LY_SEL_POSIX_NAME_MAX 32
#define LY_SEL_DNS_LABEL_MAX 63
#define LY_SEL_DNS_SUBDOMAIN_MAX 253
#define LY_SEL_K8S_LABEL_NAME_MAX 63
#define LY_SEL_IMAGE_MAX 512
#define LY_K8S_CLUSTER_NAME_MAX 128
#define LY_SEL_CN_MAX 64
#define LY_SEL_SERIAL_HEX_MAX 40

/* k8s_psat (server/attest_k8s_psat.c): a configured audience and API server URL; status.audiences looked through. */
#define LY_K8S_AUDIENCE_MAX 256
#define LY_K8S_API_URL_MAX 1024
#define LY_K8S_AUDIENCES_MAX 32

/* getpwuid_r's buffer grows to at most this (agent/attest_unix.c). */
#define LY_PASSWD_BUF_MAX (1024 * 1024)
/* Digits of a cgroup hierarchy ID in /proc/PID/cgroup (agent/cgroup.c). */
#define LY_CGROUP_HIERARCHY_DIGITS_MAX 10

/*
 * Federation (server/federation.h, issue 15). The bundle endpoint: connections
 * open at once and from one peer address, the time a connection has for
 * its handshake and request, ciphertext buffered per connection before it
 * is read. The fetcher: one fetch's whole time, the longest answer read (a
 * bundle of LY_JWKS_MAX and its head), static relationships in the config.
 */
#define LY_FED_ENDPOINT_CONNS_MAX 256
#define LY_FED_ENDPOINT_CONNS_PER_ADDR_MAX 32
#define LY_FED_ENDPOINT_TIMEOUT_MS 10000
#define LY_FED_ENDPOINT_RBIO_MAX (64 * 1024)
#define LY_FED_FETCH_TIMEOUT_MS 10000
/* Fetches at once on libuv's pool (4 threads, shared with k8s_psat's TokenReviews). */
#define LY_FED_FETCH_CONCURRENT_MAX 2
#define LY_FED_RESPONSE_MAX (LY_JWKS_MAX + LY_HTTP_REQUEST_MAX)
#define LY_FED_STATIC_MAX 256

#endif /* LANYARD_CAPS_H */
