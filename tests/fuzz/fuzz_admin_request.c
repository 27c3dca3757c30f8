/*
 * fuzz_admin_request.c: the Admin service's requests (proto/admin.proto)
 * as server/admin_api.c decodes and checks them before the datastore. The
 * first byte picks the method: 0 CreateEntry, 1 UpdateEntry, 2
 * DeleteEntry, 3 ListEntries, 4 GenerateToken, 5 GetBundle, 6 ListAgents,
 * 7 EvictAgent/BanAgent, 8 Health. admin_api.c's entry conversion
 * (entry_from_pb) is static and interleaved with its handlers: entry()
 * below follows it step for step over the same library calls (lib/entry.h
 * selectors, DNS names, then ly_entry_validate: SPEC §1, SPIFFE-ID §2).
 * An entry that validates must survive a copy and validate again.
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
#include "server/server.h"

#define TD "example.org"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
entry(const uint8_t *d, size_t n, int update)
{
	Lanyard__Agent__V1__Entry *m = lanyard__agent__v1__entry__unpack(NULL, n, d);
	struct ly_entry *e = NULL, *copy = NULL;

	if (m == NULL || (update && m->entry_id[0] == '\0') || m->n_selectors > LY_SELECTORS_MAX ||
	    m->n_dns_names > LY_DNS_NAMES_MAX || ly_entry_new(&e, NULL) != LY_OK)
		goto out;
	if ((m->entry_id[0] != '\0' && ly_entry_set_string(&e->entry_id, m->entry_id, NULL) != LY_OK) ||
	    ly_entry_set_string(&e->spiffe_id, m->spiffe_id, NULL) != LY_OK ||
	    ly_entry_set_string(&e->parent_id, m->parent_id, NULL) != LY_OK ||
	    (m->hint[0] != '\0' && ly_entry_set_string(&e->hint, m->hint, NULL) != LY_OK))
		goto out;
	if (m->n_selectors > 0 && (e->selectors = calloc(m->n_selectors, sizeof(*e->selectors))) == NULL)
		goto out;
	for (; e->n_selectors < m->n_selectors; e->n_selectors++) {
		const Lanyard__Agent__V1__Selector *s = m->selectors[e->n_selectors];
		if (ly_selector_set(&e->selectors[e->n_selectors], s->type, s->value, NULL) != LY_OK)
			goto out;
	}
	for (size_t i = 0; i < m->n_dns_names; i++)
		if (ly_entry_add_dns_name(e, m->dns_names[i], NULL) != LY_OK)
			goto out;
	e->x509_svid_ttl = m->x509_svid_ttl;
	e->jwt_svid_ttl = m->jwt_svid_ttl;
	e->node = m->node;
	e->admin = m->admin;
	e->downstream = m->downstream;
	if (ly_entry_validate(e, TD, NULL) != LY_OK)
		goto out;
	if (ly_entry_copy(e, &copy, NULL) != LY_OK || ly_entry_validate(copy, TD, NULL) != LY_OK)
		abort();
out:
	ly_entry_free(copy);
	ly_entry_free(e);
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
