/* admin_msg.c: see admin_msg.h. */
#include "server/admin_msg.h"

#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "agent.pb-c.h"
#include "lib/caps.h"
#include "server/attest.h"
#include "server/entry_pb.h"

static ly_status
malformed(struct ly_error *err)
{
	return ly_error_set(err, LY_E_INVALID, "malformed request");
}

/* ---- CreateEntry, UpdateEntry ---- */

ly_status
ly_admin_msg_entry_decode(const uint8_t *data, size_t len, struct ly_admin_msg_entry *out, struct ly_error *err)
{
	Lanyard__Agent__V1__Entry *m;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__agent__v1__entry__unpack(NULL, len, data)) == NULL)
		return malformed(err);
	out->msg = m;
	out->entry_id = m->entry_id[0] != '\0' ? m->entry_id : NULL;
	out->spiffe_id = m->spiffe_id[0] != '\0' ? m->spiffe_id : NULL;
	return LY_OK;
}

ly_status
ly_admin_msg_entry_check(const struct ly_admin_msg_entry *req, bool update, const char *trust_domain,
    struct ly_entry **out, struct ly_error *err)
{
	struct ly_entry *entry = NULL;
	ly_status st;

	*out = NULL;
	if (update && req->entry_id == NULL)
		return ly_error_set(err, LY_E_INVALID, "entry update needs an entry ID");
	st = ly_entry_from_pb(req->msg, &entry, err);
	/* Every rule of SPEC §1, the IDs in our trust domain (SPIFFE-ID §2). */
	if (st == LY_OK)
		st = ly_entry_validate(entry, trust_domain, err);
	if (st == LY_OK)
		st = ly_entry_check_ttl_floor(entry, err);
	if (st != LY_OK) {
		ly_entry_free(entry);
		return st;
	}
	*out = entry;
	return LY_OK;
}

void
ly_admin_msg_entry_cleanup(struct ly_admin_msg_entry *req)
{
	if (req->msg != NULL)
		lanyard__agent__v1__entry__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

/* ---- DeleteEntry ---- */

ly_status
ly_admin_msg_entry_id_decode(const uint8_t *data, size_t len, struct ly_admin_msg_entry_id *out,
    struct ly_error *err)
{
	Lanyard__Admin__V1__EntryID *m;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__admin__v1__entry_id__unpack(NULL, len, data)) == NULL)
		return malformed(err);
	out->msg = m;
	out->entry_id = m->entry_id[0] != '\0' ? m->entry_id : NULL;
	return LY_OK;
}

ly_status
ly_admin_msg_delete_check(const struct ly_admin_msg_entry_id *req, struct ly_error *err)
{
	if (req->entry_id == NULL)
		return ly_error_set(err, LY_E_INVALID, "entry delete needs an entry ID");
	return ly_entry_id_check(req->entry_id, err);
}

void
ly_admin_msg_entry_id_cleanup(struct ly_admin_msg_entry_id *req)
{
	if (req->msg != NULL)
		lanyard__admin__v1__entry_id__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

/* ---- ListEntries ---- */

static ly_status
check_filter_id(const char *s, const char *what, struct ly_error *err)
{
	struct ly_spiffe_id id;
	if (s[0] == '\0')
		return LY_OK;
	if (ly_spiffe_id_parse_str(s, &id, err) != LY_OK)
		return ly_error_wrap(err, LY_E_INVALID, "%s", what);
	return LY_OK;
}

ly_status
ly_admin_msg_filter_decode(const uint8_t *data, size_t len, struct ly_admin_msg_filter *out, struct ly_error *err)
{
	Lanyard__Admin__V1__EntryFilter *m;
	ly_status st;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__admin__v1__entry_filter__unpack(NULL, len, data)) == NULL)
		return malformed(err);
	out->msg = m;
	if (m->entry_id[0] != '\0') {
		/* SPIRE's rule: an entry ID names one entry; the other filters are not used. */
		if ((st = ly_entry_id_check(m->entry_id, err)) != LY_OK)
			goto fail;
		out->entry_id = m->entry_id;
		return LY_OK;
	}
	if ((st = check_filter_id(m->spiffe_id, "spiffe_id", err)) != LY_OK ||
	    (st = check_filter_id(m->parent_id, "parent_id", err)) != LY_OK)
		goto fail;
	if (m->n_selectors > LY_SELECTORS_MAX) {
		st = ly_error_set(err, LY_E_LIMIT, "filter has too many selectors");
		goto fail;
	}
	if (m->n_selectors > 0 && (out->sels = calloc(m->n_selectors, sizeof(*out->sels))) == NULL) {
		st = ly_error_set(err, LY_E_NOMEM, "out of memory");
		goto fail;
	}
	for (; out->n_sels < m->n_selectors; out->n_sels++) {
		st = ly_selector_set(&out->sels[out->n_sels], m->selectors[out->n_sels]->type,
		    m->selectors[out->n_sels]->value, err);
		if (st != LY_OK) {
			ly_error_wrap(err, st, "selector %zu", out->n_sels + 1);
			goto fail;
		}
	}
	out->filter.spiffe_id = m->spiffe_id[0] != '\0' ? m->spiffe_id : NULL;
	out->filter.parent_id = m->parent_id[0] != '\0' ? m->parent_id : NULL;
	out->filter.selectors = out->sels;
	out->filter.n_selectors = out->n_sels;
	out->filter.match = LY_MATCH_SUPERSET;
	return LY_OK;
fail:
	ly_admin_msg_filter_cleanup(out);
	return st;
}

void
ly_admin_msg_filter_cleanup(struct ly_admin_msg_filter *req)
{
	ly_selectors_free(req->sels, req->n_sels);
	if (req->msg != NULL)
		lanyard__admin__v1__entry_filter__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

/* ---- GenerateToken ---- */

ly_status
ly_admin_msg_token_decode(const uint8_t *data, size_t len, struct ly_admin_msg_token *out, struct ly_error *err)
{
	Lanyard__Admin__V1__TokenRequest *m;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__admin__v1__token_request__unpack(NULL, len, data)) == NULL)
		return malformed(err);
	out->msg = m;
	out->spiffe_id = m->spiffe_id[0] != '\0' ? m->spiffe_id : NULL;
	out->ttl = m->ttl;
	return LY_OK;
}

ly_status
ly_admin_msg_token_ttl(const struct ly_admin_msg_token *req, int64_t *ttl, struct ly_error *err)
{
	*ttl = req->ttl == 0 ? LY_TOKEN_TTL_DEFAULT : req->ttl;
	if (*ttl < 1 || *ttl > LY_TOKEN_TTL_MAX)
		return ly_error_set(err, LY_E_INVALID, "token TTL must be between 1 and %d seconds", LY_TOKEN_TTL_MAX);
	return LY_OK;
}

ly_status
ly_admin_msg_token_id(const struct ly_admin_msg_token *req, const char *trust_domain, const char *token,
    struct ly_spiffe_id *id, struct ly_error *err)
{
	ly_status st;

	if (req->spiffe_id == NULL)
		return ly_join_token_default_id(trust_domain, token, id, err);
	LY_TRY(ly_spiffe_id_parse_str(req->spiffe_id, id, err));
	if (!ly_spiffe_id_member_of(id, trust_domain))
		return ly_error_set(err, LY_E_INVALID, "SPIFFE ID %s is not in trust domain %s", id->id, trust_domain);
	if (ly_spiffe_id_is_trust_domain_id(id))
		return ly_error_set(err, LY_E_INVALID, "SPIFFE ID %s has no path: it would name the trust domain", id->id);
	if ((st = ly_spiffe_id_check_use(id, LY_ID_JOIN_TOKEN, err)) != LY_OK)
		return ly_error_wrap(err, st, "SPIFFE ID %s", id->id);
	return LY_OK;
}

void
ly_admin_msg_token_cleanup(struct ly_admin_msg_token *req)
{
	if (req->msg != NULL)
		lanyard__admin__v1__token_request__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}

/* ---- EvictAgent, BanAgent ---- */

ly_status
ly_admin_msg_agent_id_decode(const uint8_t *data, size_t len, struct ly_admin_msg_agent_id *out,
    struct ly_error *err)
{
	Lanyard__Admin__V1__AgentID *m;

	memset(out, 0, sizeof(*out));
	if ((m = lanyard__admin__v1__agent_id__unpack(NULL, len, data)) == NULL)
		return malformed(err);
	out->msg = m;
	out->spiffe_id = m->spiffe_id[0] != '\0' ? m->spiffe_id : NULL;
	return LY_OK;
}

ly_status
ly_admin_msg_agent_id_check(const struct ly_admin_msg_agent_id *req, struct ly_error *err)
{
	if (req->spiffe_id == NULL)
		return ly_error_set(err, LY_E_INVALID, "an agent SPIFFE ID is required");
	return LY_OK;
}

void
ly_admin_msg_agent_id_cleanup(struct ly_admin_msg_agent_id *req)
{
	if (req->msg != NULL)
		lanyard__admin__v1__agent_id__free_unpacked(req->msg, NULL);
	memset(req, 0, sizeof(*req));
}
