/*
 * fuzz_admin_request.c: the Admin service's requests (proto/admin.proto)
 * through the checks server/admin_api.c ships (server/admin_msg.h), in the
 * handlers' order. The first byte picks the method: 0 CreateEntry, 1
 * UpdateEntry, 2 DeleteEntry, 3 ListEntries, 4 GenerateToken, 5-8 the
 * requests the handlers do not read (GetBundle, ListAgents, Health) and
 * EvictAgent/BanAgent. An entry that passes the checks must survive a
 * copy, and the answer built from it (ly_entries_pb_make) must read back
 * through the same checks as the same entry.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.pb-c.h"
#include "lib/entry.h"
#include "lib/spiffeid.h"
#include "server/admin_msg.h"
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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *d = data + 1;
	size_t n = size - 1;
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
