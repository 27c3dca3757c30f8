/*
 * fuzz_admin_request.c: the Admin service's requests (proto/admin.proto)
 * through the checks server/admin_api.c ships (server/admin_msg.h), in the
 * handlers' order. The first byte picks the method: 0 CreateEntry, 1
 * UpdateEntry, 2 DeleteEntry, 3 ListEntries, 4 GenerateToken, 5-8 the
 * requests the handlers do not read (GetBundle, ListAgents, Health) and
 * EvictAgent/BanAgent. An entry that passes the checks must survive a
 * copy, and the answer built from it (ly_entries_pb_make) must read back
 * through the same checks as the same entry.
 *
 * A first byte 0xF0..0xFF picks a federation request instead
 * (server/admin_msg_fed.h), by its low nibble modulo 5: 0
 * SetFederatedBundle (a bundle that passes is never ours, and writes and
 * reads back as the same bundle), 1 DeleteFederatedBundle, 2
 * Create/UpdateFederationRelationship (what passes passes the datastore's
 * check again), 3 a TrustDomain, 4 the requests read for nothing.
 *
 * A first byte 0xE0..0xEF picks the shared audit trail
 * (server/admin_msg_audit.h): even, a ListAuditLines request (what passes
 * has its since and limit in range); odd, `audit list -since` text (a
 * time that parses is never negative).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.pb-c.h"
#include "lib/entry.h"
#include "lib/spiffeid.h"
#include "server/admin_msg.h"
#include "server/admin_msg_audit.h"
#include "server/admin_msg_fed.h"
#include "server/entry_pb.h"

#define TD "example.org"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
entry(const uint8_t *d, size_t n, bool update)
{
	struct ly_admin_msg_entry rq, rq2;
	struct ly_entry *e = NULL, *copy = NULL, *back = NULL;
	struct ly_entries_pb pb;
	uint8_t *buf = NULL;

	memset(&pb, 0, sizeof(pb));
	memset(&rq2, 0, sizeof(rq2));
	if (ly_admin_msg_entry_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (ly_admin_msg_entry_check(&rq, update, TD, &e, NULL) != LY_OK)
		goto out;
	if (update && (rq.entry_id == NULL || strcmp(e->entry_id, rq.entry_id) != 0))
		abort();
	if (ly_entry_copy(e, &copy, NULL) != LY_OK || ly_entry_validate(copy, TD, NULL) != LY_OK)
		abort();
	/* The answer the server sends back must pass the same checks as the same entry. */
	const struct ly_entry *one = e;
	if (ly_entries_pb_make(&one, 1, &pb, NULL) != LY_OK)
		abort();
	size_t len = protobuf_c_message_get_packed_size(&pb.msgs[0].base);
	if ((buf = malloc(len + 1)) == NULL)
		abort();
	(void)protobuf_c_message_pack(&pb.msgs[0].base, buf);
	if (ly_admin_msg_entry_decode(buf, len, &rq2, NULL) != LY_OK ||
	    ly_admin_msg_entry_check(&rq2, update, TD, &back, NULL) != LY_OK ||
	    strcmp(back->spiffe_id, e->spiffe_id) != 0 || strcmp(back->parent_id, e->parent_id) != 0 ||
	    back->n_selectors != e->n_selectors || back->n_dns_names != e->n_dns_names)
		abort();
out:
	free(buf);
	ly_entries_pb_cleanup(&pb);
	ly_entry_free(back);
	ly_entry_free(copy);
	ly_entry_free(e);
	ly_admin_msg_entry_cleanup(&rq2);
	ly_admin_msg_entry_cleanup(&rq);
}

static void
delete(const uint8_t *d, size_t n)
{
	struct ly_admin_msg_entry_id rq;

	if (ly_admin_msg_entry_id_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (ly_admin_msg_delete_check(&rq, NULL) == LY_OK && (rq.entry_id == NULL || rq.entry_id[0] == '\0'))
		abort();
	ly_admin_msg_entry_id_cleanup(&rq);
}

static void
filter(const uint8_t *d, size_t n)
{
	struct ly_admin_msg_filter rq;

	if (ly_admin_msg_filter_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (rq.entry_id == NULL && (rq.n_sels > LY_SELECTORS_MAX || rq.filter.n_selectors != rq.n_sels ||
	    rq.filter.match != LY_MATCH_SUPERSET))
		abort();
	ly_admin_msg_filter_cleanup(&rq);
}

static void
token(const uint8_t *d, size_t n)
{
	struct ly_admin_msg_token rq;
	struct ly_spiffe_id id;
	int64_t ttl = 0;

	if (ly_admin_msg_token_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (ly_admin_msg_token_ttl(&rq, &ttl, NULL) == LY_OK) {
		if (ttl < 1 || ttl > LY_TOKEN_TTL_MAX)
			abort();
		if (ly_admin_msg_token_id(&rq, TD, "0123456789abcdef0123456789abcdef", &id, NULL) == LY_OK &&
		    (!ly_spiffe_id_member_of(&id, TD) || ly_spiffe_id_is_trust_domain_id(&id)))
			abort();
	}
	ly_admin_msg_token_cleanup(&rq);
}

static void
agent(const uint8_t *d, size_t n)
{
	struct ly_admin_msg_agent_id rq;

	if (ly_admin_msg_agent_id_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (ly_admin_msg_agent_id_check(&rq, NULL) == LY_OK && (rq.spiffe_id == NULL || rq.spiffe_id[0] == '\0'))
		abort();
	ly_admin_msg_agent_id_cleanup(&rq);
}

static void
fed_bundle_set(const uint8_t *d, size_t n)
{
	struct ly_admin_msg_bundle_set rq;
	struct ly_bundle *b = NULL, *back = NULL;
	char *json = NULL;

	if (ly_admin_msg_bundle_set_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (ly_admin_msg_bundle_set_check(&rq, TD, &b, NULL) == LY_OK) {
		const char *td = ly_bundle_trust_domain(b);
		if (strcmp(td, TD) == 0 || ly_bundle_write_jwks(b, 0, &json, NULL) != LY_OK ||
		    ly_bundle_parse_jwks(td, json, strlen(json), &back, NULL) != LY_OK || !ly_bundle_equal(b, back))
			abort();
	}
	free(json);
	ly_bundle_free(back);
	ly_bundle_free(b);
	ly_admin_msg_bundle_set_cleanup(&rq);
}

static void
fed_bundle_delete(const uint8_t *d, size_t n)
{
	struct ly_admin_msg_bundle_delete rq;
	enum ly_fed_delete_mode mode;
	char td[LY_TRUST_DOMAIN_MAX + 1];

	if (ly_admin_msg_bundle_delete_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (ly_admin_msg_bundle_delete_check(&rq, TD, td, &mode, NULL) == LY_OK &&
	    (strcmp(td, TD) == 0 || strcmp(ly_fed_delete_mode_name(mode), "?") == 0))
		abort();
	ly_admin_msg_bundle_delete_cleanup(&rq);
}

static void
fed_relationship(const uint8_t *d, size_t n)
{
	struct ly_admin_msg_rel rq;
	struct ly_admin_msg_rel_checked c;

	memset(&c, 0, sizeof(c));
	if (ly_admin_msg_rel_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (ly_admin_msg_rel_check(&rq, TD, &c, NULL) == LY_OK) {
		if (ly_ds_fed_rel_check(&c.rel, TD, NULL) != LY_OK || strncmp(c.rel.bundle_endpoint_url, "https://", 8) != 0 ||
		    (c.bundle != NULL && strcmp(ly_bundle_trust_domain(c.bundle), c.td) != 0))
			abort();
	}
	ly_admin_msg_rel_checked_cleanup(&c);
	ly_admin_msg_rel_cleanup(&rq);
}

static void
fed_td(const uint8_t *d, size_t n)
{
	struct ly_admin_msg_td rq;
	char td[LY_TRUST_DOMAIN_MAX + 1];

	if (ly_admin_msg_td_decode(d, n, &rq, NULL) != LY_OK)
		return;
	if (ly_admin_msg_td_check(rq.trust_domain, TD, td, NULL) == LY_OK && (td[0] == '\0' || strcmp(td, TD) == 0))
		abort();
	ly_admin_msg_td_cleanup(&rq);
}

static void
fed(unsigned which, const uint8_t *d, size_t n)
{
	switch (which % 5) {
	case 0:
		fed_bundle_set(d, n);
		break;
	case 1:
		fed_bundle_delete(d, n);
		break;
	case 2:
		fed_relationship(d, n);
		break;
	case 3:
		fed_td(d, n);
		break;
	default: {
		ly_status a = ly_admin_msg_empty_decode("count", d, n, NULL);
		ly_status b = ly_admin_msg_empty_decode("relationships", d, n, NULL);
		(void)a;
		(void)b;
		break;
	}
	}
}

static void
audit(bool since_text, const uint8_t *d, size_t n)
{
	struct ly_admin_msg_audit_list rq;
	char text[128];
	int64_t v;

	if (!since_text) {
		if (ly_admin_msg_audit_list_decode(d, n, &rq, NULL) == LY_OK &&
		    (rq.since < 0 || rq.since > LY_AUDIT_SINCE_MAX || rq.limit < 1 || rq.limit > LY_DS_AUDIT_LIST_MAX))
			abort();
		return;
	}
	if (n >= sizeof(text))
		n = sizeof(text) - 1;
	memcpy(text, d, n);
	text[n] = '\0';
	if (ly_admin_msg_audit_since_parse(text, 1800000000, &v, NULL) == LY_OK && v < 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *d = data + 1;
	size_t n = size - 1;
	if (data[0] >= 0xE0 && data[0] < 0xF0) {
		audit((data[0] & 1u) != 0, d, n);
		return 0;
	}
	if (data[0] >= 0xF0) {
		fed(data[0] & 0x0fu, d, n);
		return 0;
	}
	switch (data[0] % 9) {
	case 0:
	case 1:
		entry(d, n, data[0] % 9 == 1);
		break;
	case 2:
		delete(d, n);
		break;
	case 3:
		filter(d, n);
		break;
	case 4:
		token(d, n);
		break;
	case 7:
		agent(d, n);
		break;
	default:
		/* GetBundle, ListAgents, Health: the handlers read nothing from these. */
		break;
	}
	return 0;
}
