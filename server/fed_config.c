/*
 * fed_config.c: server.federation (federation.h, SPEC §9), SPIRE's names:
 *
 *   server:
 *     federation:
 *       bundle_endpoint:
 *         address: 0.0.0.0
 *         port: 8443
 *         refresh_hint: 5m
 *         profile:
 *           https_spiffe: {}          # or
 *           https_web:
 *             serving_cert_file: {cert_file_path: ..., key_file_path: ...}
 *       federates_with:
 *         "b.test":
 *           bundle_endpoint_url: https://127.0.0.1:8443
 *           bundle_endpoint_profile:
 *             https_spiffe: {endpoint_spiffe_id: spiffe://b.test/lanyard/server}
 *       https_web_ca_file: /path/ca.pem   # ours: https_web anchors (default Debian's store)
 *
 * The trust domain keys of federates_with are quoted names with dots
 * (lib/config.h); a key below one is recognised by its known suffix.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "server/federation.h"

#define F "server.federation."
#define EP F "bundle_endpoint."
#define FW F "federates_with"

const char *const ly_fed_config_keys[] = {
	EP "address",
	EP "port",
	EP "refresh_hint",
	EP "profile.https_spiffe",
	EP "profile.https_web.serving_cert_file.cert_file_path",
	EP "profile.https_web.serving_cert_file.key_file_path",
	F "https_web_ca_file",
	FW ".*",
	NULL,
};

/* The keys a relationship takes, below its trust domain. */
static const char *const rel_suffixes[] = {
	".bundle_endpoint_url",
	".bundle_endpoint_profile",
	".bundle_endpoint_profile.https_spiffe",
	".bundle_endpoint_profile.https_spiffe.endpoint_spiffe_id",
	".bundle_endpoint_profile.https_web",
	NULL,
};

static ly_status
check_ip(const char *s, struct ly_error *err)
{
	unsigned char addr[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1)
		return LY_OK;
	return ly_error_set(err, LY_E_INVALID, "\"%s\" is not an IPv4 or IPv6 address", s);
}

ly_status
ly_fed_url_parse(const char *url, struct ly_fed_url *out, struct ly_error *err)
{
	static const char scheme[] = "https://";
	memset(out, 0, sizeof(*out));
	if (strlen(url) > LY_FED_URL_MAX)
		return ly_error_set(err, LY_E_LIMIT, "URL longer than %d bytes", LY_FED_URL_MAX);
	if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
		return ly_error_set(err, LY_E_INVALID, "URL must start with https://");
	const char *p = url + sizeof(scheme) - 1;
	for (const char *q = url; *q != '\0'; q++)
		if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f || *q == '?' || *q == '#' || *q == '@' ||
		    *q == '\\')
			return ly_error_set(err, LY_E_INVALID,
			    "URL may not hold spaces, control bytes, user info, a query or a fragment (offset %zu)",
			    (size_t)(q - url));
	const char *host = p, *host_end;
	if (*p == '[') {
		host = p + 1;
		host_end = strchr(host, ']');
		if (host_end == NULL)
			return ly_error_set(err, LY_E_INVALID, "URL: unclosed [ in the host");
		p = host_end + 1;
		out->host_is_ip = true;
	} else {
		host_end = p + strcspn(p, ":/");
		p = host_end;
	}
	size_t hlen = (size_t)(host_end - host);
	if (hlen == 0 || hlen >= sizeof(out->host))
		return ly_error_set(err, LY_E_INVALID, "URL: empty or too long host");
	memcpy(out->host, host, hlen);
	unsigned char a6[sizeof(struct in6_addr)];
	if (out->host_is_ip && inet_pton(AF_INET6, out->host, a6) != 1)
		return ly_error_set(err, LY_E_INVALID, "URL: [%s] is not an IPv6 address", out->host);
	if (!out->host_is_ip) {
		for (size_t i = 0; i < hlen; i++) {
			char c = out->host[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
				c == '.'))
				return ly_error_set(err, LY_E_INVALID, "URL: host has an invalid character '%c'", c);
		}
		out->host_is_ip = inet_pton(AF_INET, out->host, a6) == 1;
	}
	out->port = 443;
	if (*p == ':') {
		p++;
		unsigned long v = 0;
		size_t n = 0;
		while (p[n] >= '0' && p[n] <= '9' && n < 6)
			v = v * 10 + (unsigned long)(p[n++] - '0');
		if (n == 0 || (p[n] != '\0' && p[n] != '/') || v == 0 || v > 65535 || (n > 1 && p[0] == '0'))
			return ly_error_set(err, LY_E_INVALID, "URL: the port must be 1..65535");
		out->port = (uint16_t)v;
		p += n;
	}
	if (*p == '\0') {
		strcpy(out->path, "/");
	} else if (*p == '/') {
		if (strlen(p) > LY_HTTP_PATH_MAX)
			return ly_error_set(err, LY_E_LIMIT, "URL: path longer than %d bytes", LY_HTTP_PATH_MAX);
		strcpy(out->path, p);
	} else {
		return ly_error_set(err, LY_E_INVALID, "URL: unexpected '%c' after the host", *p);
	}
	return LY_OK;
}

static ly_status
load_endpoint(const struct ly_config *file, struct ly_fed_endpoint_config *ep, struct ly_error *err)
{
	uint64_t hint;

	ep->enabled = ly_config_has(file, F "bundle_endpoint");
	LY_TRY(ly_config_get_string(file, EP "address", "0.0.0.0", &ep->address, err));
	if (check_ip(ep->address, err) != LY_OK)
		return ly_config_wrap(file, EP "address", err, LY_E_INVALID);
	LY_TRY(ly_config_get_port(file, EP "port", 8443, &ep->port, err));
	LY_TRY(ly_config_get_duration(file, EP "refresh_hint", LY_FED_REFRESH_HINT_DEFAULT, &hint, err));
	if (hint < LY_FED_REFRESH_HINT_MIN || hint > LY_FED_REFRESH_HINT_MAX) {
		ly_error_set(err, LY_E_INVALID, "must be between %d and %d seconds", LY_FED_REFRESH_HINT_MIN,
		    LY_FED_REFRESH_HINT_MAX);
		return ly_config_wrap(file, EP "refresh_hint", err, LY_E_INVALID);
	}
	ep->refresh_hint = hint;
	bool spiffe = ly_config_has(file, EP "profile.https_spiffe");
	bool web = ly_config_has(file, EP "profile.https_web");
	if (spiffe && web) {
		ly_error_set(err, LY_E_INVALID, "give one profile: https_spiffe or https_web");
		return ly_config_wrap(file, EP "profile", err, LY_E_INVALID);
	}
	if (ly_config_has(file, EP "profile") && !spiffe && !web) {
		ly_error_set(err, LY_E_INVALID, "must be https_spiffe: {} or https_web: {serving_cert_file: ...}");
		return ly_config_wrap(file, EP "profile", err, LY_E_INVALID);
	}
	ep->profile = web ? LY_FED_PROFILE_HTTPS_WEB : LY_FED_PROFILE_HTTPS_SPIFFE;
	LY_TRY(ly_config_get_string(file, EP "profile.https_web.serving_cert_file.cert_file_path", NULL,
	    &ep->cert_file_path, err));
	LY_TRY(ly_config_get_string(file, EP "profile.https_web.serving_cert_file.key_file_path", NULL,
	    &ep->key_file_path, err));
	if (web && (ep->cert_file_path == NULL || ep->key_file_path == NULL)) {
		ly_error_set(err, LY_E_INVALID, "https_web needs serving_cert_file with cert_file_path and key_file_path");
		return ly_config_wrap(file, EP "profile.https_web", err, LY_E_INVALID);
	}
	if (web && ly_config_check_path(ep->cert_file_path, "path", err) != LY_OK)
		return ly_config_wrap(file, EP "profile.https_web.serving_cert_file.cert_file_path", err, LY_E_INVALID);
	if (web && ly_config_check_path(ep->key_file_path, "path", err) != LY_OK)
		return ly_config_wrap(file, EP "profile.https_web.serving_cert_file.key_file_path", err, LY_E_INVALID);
	return LY_OK;
}

/* The relationship key's trust domain part: `rest` less a known suffix; 0 when `rest` is a trust domain itself. */
static size_t
suffix_len(const char *rest)
{
	size_t n = strlen(rest), best = 0;
	for (size_t i = 0; rel_suffixes[i] != NULL; i++) {
		size_t s = strlen(rel_suffixes[i]);
		if (n > s && strcmp(rest + n - s, rel_suffixes[i]) == 0 && s > best)
			best = s;
	}
	return best;
}

static ly_status
load_relationship(const struct ly_config *file, const char *td_key, const char *own_td,
    struct ly_fed_relationship *r, struct ly_error *err)
{
	char key[LY_CONFIG_KEY_MAX + 1];
	const char *td = td_key + strlen(FW) + 1, *url = NULL, *id = NULL;
	struct ly_fed_url u;

	memset(r, 0, sizeof(*r));
	if (ly_trust_domain_parse(td, false, r->trust_domain, err) != LY_OK)
		return ly_config_wrap(file, td_key, err, LY_E_INVALID);
	if (strcmp(r->trust_domain, own_td) == 0) {
		ly_error_set(err, LY_E_INVALID, "is our own trust domain");
		return ly_config_wrap(file, td_key, err, LY_E_INVALID);
	}
#define SUB(s) (snprintf(key, sizeof(key), "%s%s", td_key, (s)) < (int)sizeof(key) ? key : td_key)
	LY_TRY(ly_config_get_string(file, SUB(".bundle_endpoint_url"), NULL, &url, err));
	if (url == NULL) {
		ly_error_set(err, LY_E_INVALID, "needs bundle_endpoint_url");
		return ly_config_wrap(file, td_key, err, LY_E_INVALID);
	}
	if (ly_fed_url_parse(url, &u, err) != LY_OK)
		return ly_config_wrap(file, SUB(".bundle_endpoint_url"), err, LY_E_INVALID);
	snprintf(r->url, sizeof(r->url), "%s", url);
	bool spiffe = ly_config_has(file, SUB(".bundle_endpoint_profile.https_spiffe"));
	bool web = ly_config_has(file, SUB(".bundle_endpoint_profile.https_web"));
	if (spiffe == web) {
		ly_error_set(err, LY_E_INVALID,
		    "needs bundle_endpoint_profile with one of https_spiffe: {endpoint_spiffe_id: ...} or https_web: {}");
		return ly_config_wrap(file, td_key, err, LY_E_INVALID);
	}
	r->profile = web ? LY_FED_PROFILE_HTTPS_WEB : LY_FED_PROFILE_HTTPS_SPIFFE;
	if (spiffe) {
		LY_TRY(ly_config_get_string(file, SUB(".bundle_endpoint_profile.https_spiffe.endpoint_spiffe_id"), NULL,
		    &id, err));
		if (id == NULL) {
			ly_error_set(err, LY_E_INVALID, "https_spiffe needs endpoint_spiffe_id");
			return ly_config_wrap(file, SUB(".bundle_endpoint_profile.https_spiffe"), err, LY_E_INVALID);
		}
		if (ly_spiffe_id_parse_str(id, &r->endpoint_id, err) != LY_OK)
			return ly_config_wrap(file, key, err, LY_E_INVALID);
	}
#undef SUB
	return LY_OK;
}

ly_status
ly_fed_config_load(const struct ly_config *file, const char *own_td, struct ly_fed_config *out, struct ly_error *err)
{
	const size_t plen = strlen(FW);
	ly_status rc;

	memset(out, 0, sizeof(*out));
	if ((rc = load_endpoint(file, &out->endpoint, err)) != LY_OK)
		goto out;
	if ((rc = ly_config_get_string(file, F "https_web_ca_file", LY_FED_SYSTEM_CA_FILE, &out->web_ca_file, err)) !=
	    LY_OK)
		goto out;
	if (ly_config_check_path(out->web_ca_file, "path", err) != LY_OK) {
		rc = ly_config_wrap(file, F "https_web_ca_file", err, LY_E_INVALID);
		goto out;
	}
	/* Every key under federates_with is a trust domain or a known key below one. */
	const char *last_td = NULL;
	for (size_t i = 0; i < ly_config_count(file); i++) {
		const char *key = ly_config_key_at(file, i);
		if (strncmp(key, FW ".", plen + 1) != 0)
			continue;
		const char *rest = key + plen + 1;
		size_t s = suffix_len(rest);
		if (s > 0) {
			/* A known key: it must be below the trust domain read just before. */
			if (last_td == NULL || strlen(last_td) != strlen(key) - s ||
			    strncmp(last_td, key, strlen(last_td)) != 0) {
				rc = ly_error_set(err, LY_E_INVALID, "%s:%zu: unknown key %s", ly_config_name(file),
				    ly_config_line(file, key), key);
				goto out;
			}
			continue;
		}
		if (last_td != NULL && strncmp(key, last_td, strlen(last_td)) == 0 && key[strlen(last_td)] == '.') {
			rc = ly_error_set(err, LY_E_INVALID,
			    "%s:%zu: unknown key %s (a relationship takes bundle_endpoint_url and bundle_endpoint_profile)",
			    ly_config_name(file), ly_config_line(file, key), key);
			goto out;
		}
		if (out->n_rels == LY_FED_STATIC_MAX) {
			rc = ly_error_set(err, LY_E_LIMIT, "%s:%zu: more than %d federates_with relationships",
			    ly_config_name(file), ly_config_line(file, key), LY_FED_STATIC_MAX);
			goto out;
		}
		struct ly_fed_relationship *n = realloc(out->rels, (out->n_rels + 1) * sizeof(*n));
		if (n == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "federation: out of memory");
			goto out;
		}
		out->rels = n;
		if ((rc = load_relationship(file, key, own_td, &out->rels[out->n_rels], err)) != LY_OK)
			goto out;
		out->n_rels++;
		last_td = key;
	}
	rc = LY_OK;
out:
	if (rc != LY_OK)
		ly_fed_config_cleanup(out);
	return rc;
}

void
ly_fed_config_cleanup(struct ly_fed_config *cfg)
{
	free(cfg->rels);
	memset(cfg, 0, sizeof(*cfg));
}
