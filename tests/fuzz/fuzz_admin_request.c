/*
 * fuzz_admin_request.c: the Admin service's requests (proto/admin.proto)
 * as server/admin_api.c decodes and checks them before the datastore. The
 * first byte picks the method: 0 CreateEntry, 1 UpdateEntry, 2
 * DeleteEntry, 3 ListEntries, 4 GenerateToken, 5 GetBundle, 6 ListAgents,
 * 7 EvictAgent/BanAgent, 8 Health. Entries go through the server's own
 * conversion (server/entry_pb.h: ly_entry_from_pb) and ly_entry_validate
 * (SPEC §1, SPIFFE-ID §2); one that validates must survive a copy, and the
 * answer built from it (ly_entries_pb_make) must read back as the same
 * entry.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "agent.pb-c.h"
#include "lib/caps.h"
#include "lib/entry.h"
#include "lib/spiffeid.h"
#include "server/attest.h"
#include "server/entry_pb.h"
#include "server/server.h"

#define TD "example.org"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
entry(const uint8_t *d, size_t n, int update)
{
	Lanyard__Agent__V1__Entry *m = lanyard__agent__v1__entry__unpack(NULL, n, d), *m2 = NULL;
	struct ly_entry *e = NULL, *copy = NULL, *back = NULL;
	struct ly_entries_pb pb;
	uint8_t *buf = NULL;

	memset(&pb, 0, sizeof(pb));
	if (m == NULL || (update && m->entry_id[0] == '\0'))
		goto out;
	/* The server's own conversion, then its whole-entry rules. */
	if (ly_entry_from_pb(m, &e, NULL) != LY_OK || ly_entry_validate(e, TD, NULL) != LY_OK)
		goto out;
	if (ly_entry_copy(e, &copy, NULL) != LY_OK || ly_entry_validate(copy, TD, NULL) != LY_OK)
		abort();
	/* The answer the server sends back must read back as the same entry. */
	const struct ly_entry *one = e;
	if (ly_entries_pb_make(&one, 1, &pb, NULL) != LY_OK)
		abort();
	size_t len = protobuf_c_message_get_packed_size(&pb.msgs[0].base);
	if ((buf = malloc(len + 1)) == NULL)
		abort();
	(void)protobuf_c_message_pack(&pb.msgs[0].base, buf);
	if ((m2 = lanyard__agent__v1__entry__unpack(NULL, len, buf)) == NULL ||
	    ly_entry_from_pb(m2, &back, NULL) != LY_OK || ly_entry_validate(back, TD, NULL) != LY_OK ||
	    strcmp(back->spiffe_id, e->spiffe_id) != 0 || strcmp(back->parent_id, e->parent_id) != 0 ||
	    back->n_selectors != e->n_selectors || back->n_dns_names != e->n_dns_names)
		abort();
out:
	free(buf);
	ly_entries_pb_cleanup(&pb);
	ly_entry_free(back);
	ly_entry_free(copy);
	ly_entry_free(e);
	if (m2 != NULL)
		lanyard__agent__v1__entry__free_unpacked(m2, NULL);
	if (m != NULL)
		lanyard__agent__v1__entry__free_unpacked(m, NULL);
}

static void
filter(const uint8_t *d, size_t n)
{
	Lanyard__Admin__V1__EntryFilter *m = lanyard__admin__v1__entry_filter__unpack(NULL, n, d);
	struct ly_spiffe_id id;
	struct ly_selector sel;

	if (m == NULL)
		return;
	if (m->entry_id[0] != '\0') {
		if (ly_entry_id_check(m->entry_id, NULL) == LY_OK && m->entry_id[0] == '\0')
			abort();
	} else if ((m->spiffe_id[0] == '\0' || ly_spiffe_id_parse_str(m->spiffe_id, &id, NULL) == LY_OK) &&
	    (m->parent_id[0] == '\0' || ly_spiffe_id_parse_str(m->parent_id, &id, NULL) == LY_OK)) {
		for (size_t i = 0; m->n_selectors <= LY_SELECTORS_MAX && i < m->n_selectors; i++) {
			if (ly_selector_set(&sel, m->selectors[i]->type, m->selectors[i]->value, NULL) != LY_OK)
				break;
			ly_selector_cleanup(&sel);
		}
	}
	lanyard__admin__v1__entry_filter__free_unpacked(m, NULL);
}

static void
token(const uint8_t *d, size_t n)
{
	Lanyard__Admin__V1__TokenRequest *m = lanyard__admin__v1__token_request__unpack(NULL, n, d);
	struct ly_spiffe_id id;

	if (m == NULL)
		return;
	int64_t ttl = m->ttl == 0 ? LY_TOKEN_TTL_DEFAULT : m->ttl;
	if (ttl >= 1 && ttl <= LY_TOKEN_TTL_MAX) {
		if (m->spiffe_id[0] == '\0') {
			if (ly_join_token_default_id(TD, "0123456789abcdef0123456789abcdef", &id, NULL) != LY_OK)
				abort();
		} else if (ly_spiffe_id_parse_str(m->spiffe_id, &id, NULL) == LY_OK) {
			(void)(ly_spiffe_id_member_of(&id, TD) && !ly_spiffe_id_is_trust_domain_id(&id));
		}
	}
	lanyard__admin__v1__token_request__free_unpacked(m, NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *d = data + 1;
	size_t n = size - 1;
	ProtobufCMessage *m = NULL;
	switch (data[0] % 9) {
	case 0:
	case 1:
		entry(d, n, data[0] % 9);
		break;
	case 2: {
		Lanyard__Admin__V1__EntryID *id = lanyard__admin__v1__entry_id__unpack(NULL, n, d);
		if (id != NULL && ly_entry_id_check(id->entry_id, NULL) == LY_OK && id->entry_id[0] == '\0')
			abort();
		m = id != NULL ? &id->base : NULL;
		break;
	}
	case 3:
		filter(d, n);
		break;
	case 4:
		token(d, n);
		break;
	case 5:
		m = (ProtobufCMessage *)lanyard__agent__v1__get_bundle_request__unpack(NULL, n, d);
		break;
	case 6:
		m = (ProtobufCMessage *)lanyard__admin__v1__list_agents_request__unpack(NULL, n, d);
		break;
	case 7: {
		Lanyard__Admin__V1__AgentID *a = lanyard__admin__v1__agent_id__unpack(NULL, n, d);
		struct ly_spiffe_id id;
		if (a != NULL && ly_spiffe_id_parse_str(a->spiffe_id, &id, NULL) == LY_OK && id.td_end > strlen(id.id))
			abort();
		m = a != NULL ? &a->base : NULL;
		break;
	}
	default:
		m = (ProtobufCMessage *)lanyard__admin__v1__health_request__unpack(NULL, n, d);
		break;
	}
	if (m != NULL)
		protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}
