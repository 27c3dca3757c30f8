/*
 * sds_msg.h: Envoy SDS v3 messages (SPEC §8, issue 14; Envoy's
 * envoy.service.discovery.v3 DiscoveryRequest/DiscoveryResponse, trimmed
 * in proto/envoy_*.proto): the requests Envoy sends, decoded and checked,
 * and the responses, built from the cache as SPIRE's agent builds them
 * (pkg/agent/endpoints/sdsv3).
 *
 * Requests (ly_sds_parse_request; any failure is the caller's
 * INVALID_ARGUMENT): at most LY_SDS_REQUEST_MAX bytes; resource_names at
 * most LY_SDS_NAMES_MAX, each at most LY_SDS_NAME_MAX bytes of UTF-8
 * without control characters (empty names are skipped, as SPIRE does);
 * version_info and response_nonce at most LY_SDS_VERSION_MAX bytes of text;
 * type_url empty or LY_SDS_SECRET_TYPE; error_detail.message at most
 * LY_SDS_ERROR_MAX bytes. A request must re-encode to its own length (see
 * workload_msg.h: no NUL inside a string, no field sent twice); fields our
 * trimmed protos leave out (Node.extensions...) are kept as unknown fields
 * and re-encode as they came.
 *
 * Selection (ly_sds_select, SPIRE's rules): with the caller's identities
 * (a LY_CACHE_QUERY_X509 query, default identity first) and the bundle set
 * the caller may see (sds.c passes fedset.h's view: our bundle and those of
 * the trust domains its identities' entries federate with),
 *   - an SVID's SPIFFE ID: that TlsCertificate;
 *   - names->default_svid ("default"): the first identity's, so named;
 *   - "spiffe://<td>" for a bundle of the set: its validation context;
 *   - names->default_bundle ("ROOTCA"): our trust domain's bundle;
 *   - names->all_bundles ("ALL"): every bundle of the set in one
 *     validation context (ours and the caller's federated ones);
 *   - no name: every identity and every bundle, each under its own name.
 * Any name left unserved fails the whole request with LY_E_NOT_FOUND, the
 * message listing the names sorted: the caller answers INVALID_ARGUMENT
 * "workload is not authorized for the requested identities [...]" (SPIRE).
 * Unlike SPIRE, a request naming both the first SVID's ID and "default"
 * gets both.
 *
 * Validation contexts: with `spiffe` (ly_sds_use_spiffe_validator), a
 * custom_validator_config "envoy.tls.cert_validator.spiffe" whose
 * SPIFFECertValidatorConfig lists one trust domain {name, inline PEM
 * bundle} per bundle; otherwise trusted_ca = the bundles' authorities as
 * inline PEM. TlsCertificate: certificate_chain = leaf and intermediates
 * as inline PEM, private_key = PKCS#8 PEM inline. Secret.name is the name
 * asked for. Each resource is a google.protobuf.Any of LY_SDS_SECRET_TYPE.
 *
 * Secrets: a packed response with a TlsCertificate holds private keys:
 * free it with ly_buf_free_secret() once sent. Pure: no I/O, no global
 * state, any thread. `out` buffers must be empty on entry.
 */
#ifndef LANYARD_AGENT_SDS_MSG_H
#define LANYARD_AGENT_SDS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/cache.h"
#include "lib/buf.h"
#include "lib/bundle.h"
#include "lib/error.h"

#define LY_SDS_SECRET_TYPE "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
#define LY_SDS_SPIFFE_VALIDATOR_TYPE \
	"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
#define LY_SDS_SPIFFE_VALIDATOR_NAME "envoy.tls.cert_validator.spiffe"
/* The node metadata key (a bool) by which one Envoy asks for trusted_ca (SPIRE's). */
#define LY_SDS_META_DISABLE_SPIFFE "disable_spiffe_cert_validation"

/* A decoded DiscoveryRequest; strings are borrowed from `msg`. */
struct ly_sds_request {
	const char **names; /* n_names non-empty resource names, in order */
	size_t n_names;
	const char *version_info;   /* "" when none */
	const char *response_nonce; /* "" when none */
	const char *node_id;        /* "" when none */
	const char *node_cluster;
	const char *user_agent_name;
	bool has_build_version; /* node.user_agent_build_version.version */
	uint32_t major, minor, patch;
	bool meta_disable_spiffe; /* node.metadata[LY_SDS_META_DISABLE_SPIFFE] is true */
	bool nack;                /* error_detail present */
	int32_t error_code;
	const char *error_message; /* "" unless nack */
	void *msg;                 /* the unpacked message */
};

ly_status ly_sds_parse_request(const uint8_t *data, size_t len, struct ly_sds_request *out, struct ly_error *err)
    LY_MUST_CHECK;
void ly_sds_request_cleanup(struct ly_sds_request *req);

/* The same set of names (order and repeats aside), SPIRE's "subListChanged" negated. */
bool ly_sds_names_equal(const struct ly_sds_request *a, const struct ly_sds_request *b);

/*
 * SPIRE's rule: the SPIFFE validator unless `disable` (the agent's
 * configuration), the node's metadata asks for trusted_ca, or the Envoy is
 * 1.17 or older, or does not say its version.
 */
bool ly_sds_use_spiffe_validator(const struct ly_sds_request *req, bool disable);

/* The configurable names (SPIRE's defaults: "default", "ROOTCA", "ALL"). */
struct ly_sds_names {
	const char *default_svid;
	const char *default_bundle;
	const char *all_bundles;
};

#define LY_SDS_DIGEST_LEN 32

/*
 * The DiscoveryResponse for `req` (see Selection above): `ids` the caller's
 * identities (every item with an SVID), `set` the bundles, `own_td` our
 * trust domain (bare). `version_info` and `nonce` may be NULL (FetchSecrets:
 * none). `*n_resources` is how many secrets it holds. `digest` (may be
 * NULL) receives the SHA-256 of the resources alone, so a caller can tell
 * whether anything changed whatever the version and nonce.
 */
ly_status ly_sds_response(const struct ly_sds_request *req, const struct ly_sds_names *names, bool spiffe,
    const struct ly_cache_identities *ids, const struct ly_bundle_set *set, const char *own_td,
    const char *version_info, const char *nonce, struct ly_buf *out, size_t *n_resources,
    uint8_t digest[LY_SDS_DIGEST_LEN], struct ly_error *err) LY_MUST_CHECK;

#endif /* LANYARD_AGENT_SDS_MSG_H */
