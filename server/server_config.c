/*
 * server_config.c: the `run` configuration (server.h): the YAML file's
 * `server:` section, then the flags over it (SPEC §2). Every value is
 * checked here, before anything is opened, so that a mistake is reported
 * as "file:line: key K: why" (or "flag -F: why") and the daemon exits 2.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "lib/config.h"
#include "lib/daemon.h"
#include "lib/keys.h"
#include "lib/log.h"
#include "lib/spiffeid.h"
#include "server/attest.h"
#include "server/ca.h"
#include "server/datastore.h"
#include "server/federation.h"
#include "server/server.h"

#define K "server."
#define PSAT_CLUSTERS K "node_attestors.k8s_psat.clusters"

static const char *const known_keys[] = {
	K "trust_domain",
	K "bind_address",
	K "server_port",
	K "socket_path",
	K "data_dir",
	K "datastore.database_type",
	K "datastore.connection_string",
	K "log_level",
	K "log_format",
	K "ca_key_type",
	K "ca_ttl",
	K "default_x509_svid_ttl",
	K "default_jwt_svid_ttl",
	K "upstream_ca.cert_file",
	K "upstream_ca.key_file",
	K "audit_log",
	K "audit_retention",
	K "node_attestors.join_token",
	K "node_attestors.x509pop.ca_bundle_path",
	PSAT_CLUSTERS ".*",
	K "health_checks.listener_enabled",
	K "ratelimit.attestation",
	K "ratelimit.signing",
	K "health_checks.bind_address",
	K "health_checks.bind_port",
	K "health_checks.live_path",
	K "health_checks.ready_path",
	NULL,
};

/* The settings of one k8s_psat cluster (PSAT_CLUSTERS.NAME.<key>). */
static const char *const psat_keys[] = {
	"service_account_allow_list", "audience", "api_server_url", "ca_file", "token_file", NULL,
};

/* An IPv4 or IPv6 address (no host names: we bind, we do not resolve). */
static ly_status
check_ip(const char *s, struct ly_error *err)
{
	unsigned char addr[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1)
		return LY_OK;
	return ly_error_set(err, LY_E_INVALID, "\"%s\" is not an IPv4 or IPv6 address", s);
}

/* A duration key within [min, max] seconds. */
static ly_status
get_seconds(const struct ly_config *file, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out,
    struct ly_error *err)
{
	uint64_t v;
	LY_TRY(ly_config_get_duration(file, key, (uint64_t)def, &v, err));
	if (v < (uint64_t)min || v > (uint64_t)max) {
		ly_error_set(err, LY_E_INVALID, "must be between %lld and %lld seconds", (long long)min,
		    (long long)max);
		return ly_config_wrap(file, key, err, LY_E_INVALID);
	}
	*out = (int64_t)v;
	return LY_OK;
}

/*
 * join_token is enabled by `join_token: {}` (or `join_token:`), and also
 * when no node_attestors section is written at all, so that a server run
 * with flags alone admits agents with `token generate` tokens (SPEC §2).
 */
static ly_status
get_join_token(const struct ly_config *file, bool *out, struct ly_error *err)
{
	const char *v = NULL;
	if (!ly_config_has(file, K "node_attestors")) {
		*out = true;
		return LY_OK;
	}
	if (!ly_config_has(file, K "node_attestors.join_token")) {
		*out = false;
		return LY_OK;
	}
	/* A scalar is a mistake ("join_token: true"); a mapping or no value enables it. */
	if (ly_config_get_string(file, K "node_attestors.join_token", NULL, &v, NULL) == LY_OK && v != NULL) {
		ly_error_set(err, LY_E_INVALID, "must be a mapping: write join_token: {}");
		return ly_config_wrap(file, K "node_attestors.join_token", err, LY_E_INVALID);
	}
	*out = true;
	return LY_OK;
}

/*
 * Keys under PSAT_CLUSTERS are free-form names (the clusters), each with
 * the settings of psat_keys only. ly_config_check_known lets the whole
 * subtree through, so every key below a cluster is checked here.
 */
static ly_status
check_psat_keys(const struct ly_config *file, struct ly_error *err)
{
	const size_t plen = strlen(PSAT_CLUSTERS);
	for (size_t i = 0; i < ly_config_count(file); i++) {
		const char *key = ly_config_key_at(file, i);
		if (strncmp(key, PSAT_CLUSTERS ".", plen + 1) != 0)
			continue;
		const char *dot = strchr(key + plen + 1, '.');
		if (dot == NULL)
			continue; /* the cluster's own mapping */
		bool ok = false;
		for (size_t j = 0; psat_keys[j] != NULL; j++)
			ok = ok || strcmp(dot + 1, psat_keys[j]) == 0;
		if (!ok)
			return ly_error_set(err, LY_E_INVALID, "%s:%zu: unknown key %s (a cluster takes %s, %s, %s, %s, %s)",
			    ly_config_name(file), ly_config_line(file, key), key, psat_keys[0], psat_keys[1],
			    psat_keys[2], psat_keys[3], psat_keys[4]);
	}
	return LY_OK;
}

/*
 * server.datastore: database_type sqlite3 (the default: <data_dir>/
 * datastore.sqlite3) or postgres, which needs connection_string (and only
 * postgres takes one). The connection string is checked for syntax here;
 * no message quotes it (it may hold a password).
 */
static ly_status
get_datastore(const struct ly_config *file, struct ly_server_config *cfg, struct ly_error *err)
{
	const char *type = NULL;

	/* A scalar ("datastore: postgres") is an unknown key: refused by ly_config_check_known. */
	LY_TRY(ly_config_get_string(file, K "datastore.database_type", "sqlite3", &type, err));
	if (strcmp(type, "sqlite3") == 0) {
		cfg->datastore_type = LY_DATASTORE_SQLITE3;
	} else if (strcmp(type, "postgres") == 0) {
		cfg->datastore_type = LY_DATASTORE_POSTGRES;
	} else {
		ly_error_set(err, LY_E_INVALID, "must be sqlite3 or postgres");
		return ly_config_wrap(file, K "datastore.database_type", err, LY_E_INVALID);
	}
	LY_TRY(ly_config_get_string(file, K "datastore.connection_string", NULL, &cfg->datastore_conninfo, err));
	if (cfg->datastore_type == LY_DATASTORE_SQLITE3 && cfg->datastore_conninfo != NULL) {
		ly_error_set(err, LY_E_INVALID,
		    "is for database_type: postgres only (sqlite3 is <data_dir>/datastore.sqlite3)");
		return ly_config_wrap(file, K "datastore.connection_string", err, LY_E_INVALID);
	}
	if (cfg->datastore_type == LY_DATASTORE_POSTGRES) {
		if (cfg->datastore_conninfo == NULL) {
			ly_error_set(err, LY_E_INVALID, "postgres needs server.datastore.connection_string");
			return ly_config_wrap(file, K "datastore.database_type", err, LY_E_INVALID);
		}
		ly_status rc = ly_datastore_pg_check_conninfo(cfg->datastore_conninfo, err);
		if (rc != LY_OK)
			return ly_config_wrap(file, K "datastore.connection_string", err, rc);
	}
	return LY_OK;
}

static ly_status
load_file_only(const struct ly_config *file, struct ly_server_config *cfg, struct ly_error *err)
{
	const char *s = NULL;

	LY_TRY(get_datastore(file, cfg, err));

	LY_TRY(ly_daemon_setting_log_format(file, K "log_format", &cfg->log_format, err));
	LY_TRY(ly_config_get_string(file, K "ca_key_type", NULL, &s, err));
	cfg->ca_key_type = LY_KEY_TYPE_DEFAULT;
	if (s != NULL && ly_key_type_parse(s, &cfg->ca_key_type, err) != LY_OK)
		return ly_config_wrap(file, K "ca_key_type", err, LY_E_INVALID);
	LY_TRY(get_seconds(file, K "ca_ttl", LY_CA_TTL_DEFAULT, LY_CA_TTL_MIN, LY_CA_TTL_MAX, &cfg->ca_ttl, err));
	LY_TRY(get_seconds(file, K "default_x509_svid_ttl", LY_CA_X509_SVID_TTL_DEFAULT, LY_X509_SVID_TTL_MIN,
	    LY_X509_SVID_TTL_MAX, &cfg->x509_svid_ttl, err));
	LY_TRY(get_seconds(file, K "default_jwt_svid_ttl", LY_CA_JWT_SVID_TTL_DEFAULT, LY_JWT_SVID_TTL_MIN,
	    LY_JWT_SVID_TTL_MAX, &cfg->jwt_svid_ttl, err));

	LY_TRY(ly_config_get_string(file, K "upstream_ca.cert_file", NULL, &cfg->upstream_cert_path, err));
	LY_TRY(ly_config_get_string(file, K "upstream_ca.key_file", NULL, &cfg->upstream_key_path, err));
	if ((cfg->upstream_cert_path == NULL) != (cfg->upstream_key_path == NULL)) {
		const char *given = cfg->upstream_cert_path != NULL ? K "upstream_ca.cert_file" : K "upstream_ca.key_file";
		ly_error_set(err, LY_E_INVALID, "upstream_ca needs both cert_file and key_file");
		return ly_config_wrap(file, given, err, LY_E_INVALID);
	}
	if (cfg->upstream_cert_path != NULL && ly_config_check_path(cfg->upstream_cert_path, "path", err) != LY_OK)
		return ly_config_wrap(file, K "upstream_ca.cert_file", err, LY_E_INVALID);
	if (cfg->upstream_key_path != NULL && ly_config_check_path(cfg->upstream_key_path, "path", err) != LY_OK)
		return ly_config_wrap(file, K "upstream_ca.key_file", err, LY_E_INVALID);

	LY_TRY(ly_config_get_string(file, K "audit_log", NULL, &cfg->audit_log_path, err));
	if (cfg->audit_log_path != NULL && ly_config_check_path(cfg->audit_log_path, "path", err) != LY_OK)
		return ly_config_wrap(file, K "audit_log", err, LY_E_INVALID);
	LY_TRY(get_seconds(file, K "audit_retention", LY_AUDIT_RETENTION_DEFAULT, LY_AUDIT_RETENTION_MIN,
	    LY_AUDIT_RETENTION_MAX, &cfg->audit_retention, err));

	LY_TRY(ly_config_get_bool(file, K "health_checks.listener_enabled", false, &cfg->health_enabled, err));
	LY_TRY(ly_config_get_bool(file, K "ratelimit.attestation", true, &cfg->ratelimit_attestation, err));
	LY_TRY(ly_config_get_bool(file, K "ratelimit.signing", true, &cfg->ratelimit_signing, err));
	LY_TRY(ly_config_get_string(file, K "health_checks.bind_address", "127.0.0.1", &cfg->health_bind_address,
	    err));
	if (check_ip(cfg->health_bind_address, err) != LY_OK)
		return ly_config_wrap(file, K "health_checks.bind_address", err, LY_E_INVALID);
	LY_TRY(ly_daemon_setting_health(file, K "health_checks", &cfg->health_bind_port, &cfg->health_live_path,
	    &cfg->health_ready_path, err));

	LY_TRY(get_join_token(file, &cfg->join_token_enabled, err));
	LY_TRY(ly_config_get_string(file, K "node_attestors.x509pop.ca_bundle_path", NULL,
	    &cfg->x509pop_ca_bundle_path, err));
	if (cfg->x509pop_ca_bundle_path != NULL && ly_config_check_path(cfg->x509pop_ca_bundle_path, "path", err) != LY_OK)
		return ly_config_wrap(file, K "node_attestors.x509pop.ca_bundle_path", err, LY_E_INVALID);
	return check_psat_keys(file, err);
}

static ly_status
load(const struct ly_server_flags *flags, const struct ly_config *file, struct ly_server_config *cfg,
    struct ly_error *err)
{
	/* The server's keys and federation's (federation.h), in one list. */
	const char *all_keys[sizeof(known_keys) / sizeof(known_keys[0]) + 16];
	size_t nk = 0;
	for (size_t i = 0; known_keys[i] != NULL; i++)
		all_keys[nk++] = known_keys[i];
	for (size_t i = 0; ly_fed_config_keys[i] != NULL && nk + 1 < sizeof(all_keys) / sizeof(all_keys[0]); i++)
		all_keys[nk++] = ly_fed_config_keys[i];
	all_keys[nk] = NULL;
	LY_TRY(ly_config_check_known(file, all_keys, err));

	/* The trust domain has no default: it names everything the server signs. */
	LY_TRY(ly_daemon_setting_trust_domain(file, K "trust_domain", flags->trust_domain, cfg->trust_domain, err));

	LY_TRY(ly_config_setting_string(file, K "bind_address", flags->bind_address, LY_SERVER_BIND_DEFAULT,
	    &cfg->bind_address, err));
	if (check_ip(cfg->bind_address, err) != LY_OK)
		return ly_config_setting_wrap(file, K "bind_address", flags->bind_address, "bindAddress", err, LY_E_INVALID);

	if (flags->server_port >= 0) {
		if (flags->server_port > 65535)
			return ly_error_set(err, LY_E_INVALID, "flag -serverPort: must be between 0 and 65535");
		cfg->server_port = (uint16_t)flags->server_port;
	} else {
		LY_TRY(ly_config_get_port(file, K "server_port", LY_SERVER_PORT_DEFAULT, &cfg->server_port, err));
	}

	LY_TRY(ly_daemon_setting_socket_path(file, K "socket_path", flags->socket_path, LY_SERVER_SOCKET_DEFAULT, &cfg->socket_path,
	    err));

	LY_TRY(ly_daemon_setting_data_dir(file, K "data_dir", flags->data_dir, LY_SERVER_DATA_DIR_DEFAULT, &cfg->data_dir, err));

	LY_TRY(ly_daemon_setting_log_level(file, K "log_level", flags->log_level, &cfg->log_level, err));
	LY_TRY(load_file_only(file, cfg, err));
	return ly_fed_config_load(file, cfg->trust_domain, &cfg->fed, err);
}

ly_status
ly_server_config_load(const struct ly_server_flags *flags, struct ly_server_config *cfg, struct ly_config **file,
    struct ly_error *err)
{
	struct ly_config *f = NULL;
	ly_status rc;

	*file = NULL;
	memset(cfg, 0, sizeof(*cfg));
	if (flags->config_path != NULL) {
		rc = ly_config_load_file(flags->config_path, &f, err);
		if (rc != LY_OK)
			return rc;
	}
	rc = load(flags, f, cfg, err);
	if (rc != LY_OK) {
		ly_fed_config_cleanup(&cfg->fed);
		ly_config_free(f);
		memset(cfg, 0, sizeof(*cfg));
		return rc;
	}
	*file = f;
	return LY_OK;
}

/* One cluster's settings from PSAT_CLUSTERS.<name>. */
static ly_status
add_psat_cluster(const struct ly_config *file, struct ly_attest_k8s_psat *psat, const char *name,
    struct ly_error *err)
{
	char key[LY_CONFIG_KEY_MAX + 1];
	struct ly_psat_cluster_config c = { .name = name };
	const char **fields[] = { &c.audience, &c.api_url, &c.ca_file, &c.token_file };
	const char *const field_keys[] = { "audience", "api_server_url", "ca_file", "token_file" };
	const char *const *allow = NULL;
	size_t n_allow = 0;
	ly_status rc;

#define CLUSTER_KEY(sub) (snprintf(key, sizeof(key), "%s.%s.%s", PSAT_CLUSTERS, name, (sub)) < (int)sizeof(key))
	if (!CLUSTER_KEY("service_account_allow_list"))
		return ly_error_set(err, LY_E_LIMIT, "k8s_psat cluster name %s is too long", name);
	LY_TRY(ly_config_get_list(file, key, &allow, &n_allow, err));
	if (n_allow == 0) {
		size_t line = ly_config_line(file, key);
		if (line == 0) {
			(void)snprintf(key, sizeof(key), "%s.%s", PSAT_CLUSTERS, name);
			line = ly_config_line(file, key);
		}
		return ly_error_set(err, LY_E_INVALID,
		    "%s:%zu: k8s_psat cluster %s: service_account_allow_list must list at least one \"namespace:name\"",
		    ly_config_name(file), line, name);
	}
	c.allow = allow;
	c.n_allow = n_allow;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		(void)CLUSTER_KEY(field_keys[i]);
		LY_TRY(ly_config_get_string(file, key, NULL, fields[i], err));
	}
#undef CLUSTER_KEY
	rc = ly_attest_k8s_psat_add_cluster(psat, &c, err);
	if (rc != LY_OK) {
		(void)snprintf(key, sizeof(key), "%s.%s", PSAT_CLUSTERS, name);
		return ly_config_wrap(file, key, err, rc);
	}
	return LY_OK;
}

ly_status
ly_server_config_psat(const struct ly_config *file, const char *trust_domain, struct ly_attest_k8s_psat **out,
    struct ly_error *err)
{
	struct ly_attest_k8s_psat *psat = NULL;
	const size_t plen = strlen(PSAT_CLUSTERS);
	ly_status rc = LY_OK;

	*out = NULL;
	for (size_t i = 0; i < ly_config_count(file); i++) {
		const char *key = ly_config_key_at(file, i);
		/* Each PSAT_CLUSTERS.<name> key, without a further dot, is a cluster. */
		if (strncmp(key, PSAT_CLUSTERS ".", plen + 1) != 0 || strchr(key + plen + 1, '.') != NULL)
			continue;
		if (psat == NULL) {
			rc = ly_attest_k8s_psat_new(trust_domain, &psat, err);
			if (rc != LY_OK)
				goto out;
		}
		rc = add_psat_cluster(file, psat, key + plen + 1, err);
		if (rc != LY_OK)
			goto out;
	}
	if (psat == NULL && ly_config_has(file, K "node_attestors.k8s_psat")) {
		rc = ly_error_set(err, LY_E_INVALID, "%s:%zu: k8s_psat needs at least one cluster under clusters",
		    ly_config_name(file), ly_config_line(file, K "node_attestors.k8s_psat"));
		goto out;
	}
	*out = psat;
	psat = NULL;
out:
	ly_attest_k8s_psat_free(psat);
	return rc;
}
