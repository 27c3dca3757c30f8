/*
 * test_server_config.c: `lanyard-server run` configuration
 * (server/server_config.c): defaults with flags alone, the YAML file's
 * keys, flags over the file (SPEC §2), unknown keys refused with file:line,
 * and every value that must be refused, each named in the message; the
 * datastore (sqlite3 or postgres with a connection string never echoed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/config.h"
#include "server/attest.h"
#include "server/ca.h"
#include "server/server.h"

static char cfg_path[256];

static int
setup(void **state)
{
	(void)snprintf(cfg_path, sizeof(cfg_path), "/tmp/lanyard-test-server-config-%ld.yaml", (long)getpid());
	return 0;
}

static int
teardown(void **state)
{
	(void)unlink(cfg_path);
	return 0;
}

static const char *
write_cfg(const char *text)
{
	FILE *f = fopen(cfg_path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	fclose(f);
	return cfg_path;
}

/* Loads with `flags`; returns the status, the error in *e. */
static ly_status
load(const struct ly_server_flags *flags, struct ly_server_config *cfg, struct ly_config **file, struct ly_error *e)
{
	ly_error_clear(e);
	return ly_server_config_load(flags, cfg, file, e);
}

static void
expect_refused(const struct ly_server_flags *flags, ly_status want, const char *msg_part)
{
	struct ly_server_config cfg;
	struct ly_config *file = (struct ly_config *)1;
	struct ly_error e;
	ly_status st = load(flags, &cfg, &file, &e);
	if (st != want || strstr(e.msg, msg_part) == NULL)
		fail_msg("want %d with \"%s\", got %d: %s", want, msg_part, st, e.msg);
	assert_null(file);
}

/* A file (with -trustDomain given, unless the file sets it) refused with `msg_part`. */
static void
expect_file_refused(const char *body, const char *msg_part)
{
	struct ly_server_flags flags = LY_SERVER_FLAGS_INIT;
	if (strstr(body, "trust_domain") == NULL)
		flags.trust_domain = "example.org";
	flags.config_path = write_cfg(body);
	expect_refused(&flags, LY_E_INVALID, msg_part);
}

static void
test_flags_alone_defaults(void **state)
{
	struct ly_server_flags flags = LY_SERVER_FLAGS_INIT;
	struct ly_server_config cfg;
	struct ly_config *file = (struct ly_config *)1;
	struct ly_error e;

	flags.trust_domain = "example.org";
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_null(file);
	assert_string_equal(cfg.trust_domain, "example.org");
	assert_string_equal(cfg.bind_address, LY_SERVER_BIND_DEFAULT);
	assert_int_equal(cfg.server_port, LY_SERVER_PORT_DEFAULT);
	assert_string_equal(cfg.socket_path, LY_SERVER_SOCKET_DEFAULT);
	assert_string_equal(cfg.data_dir, LY_SERVER_DATA_DIR_DEFAULT);
	assert_string_equal(cfg.log_level, "info");
	assert_string_equal(cfg.log_format, "text");
	assert_int_equal(cfg.ca_key_type, LY_KEY_EC_P256);
	assert_int_equal(cfg.ca_ttl, 24 * 3600);
	assert_int_equal(cfg.x509_svid_ttl, 3600);
	assert_int_equal(cfg.jwt_svid_ttl, 300);
	assert_null(cfg.upstream_cert_path);
	assert_null(cfg.upstream_key_path);
	assert_null(cfg.audit_log_path);
	assert_int_equal(cfg.audit_retention, 30 * 24 * 3600);
	assert_true(cfg.join_token_enabled);
	assert_null(cfg.x509pop_ca_bundle_path);
}

static void
test_trust_domain_required_and_checked(void **state)
{
	struct ly_server_flags flags = LY_SERVER_FLAGS_INIT;
	struct ly_server_config cfg;
	struct ly_config *file = NULL;
	struct ly_error e;

	expect_refused(&flags, LY_E_INVALID, "no trust domain");
	flags.trust_domain = "Example.org";
	expect_refused(&flags, LY_E_INVALID, "flag -trustDomain");
	flags.trust_domain = "spiffe://example.org/path";
	expect_refused(&flags, LY_E_INVALID, "flag -trustDomain");
	/* What operators type: the trust domain ID form is accepted. */
	flags.trust_domain = "spiffe://example.org";
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_string_equal(cfg.trust_domain, "example.org");
}

static void
test_file_values(void **state)
{
	struct ly_server_flags flags = LY_SERVER_FLAGS_INIT;
	struct ly_server_config cfg;
	struct ly_config *file = NULL;
	struct ly_error e;

	flags.config_path = write_cfg(
	    "server:\n"
	    "  trust_domain: prod.example.org\n"
	    "  bind_address: \"::1\"\n"
	    "  server_port: 9443\n"
	    "  socket_path: /run/lanyard/admin/api.sock\n"
	    "  data_dir: /var/lib/lanyard\n"
	    "  log_level: debug\n"
	    "  log_format: json\n"
	    "  ca_key_type: ec-p384\n"
	    "  ca_ttl: 48h\n"
	    "  default_x509_svid_ttl: 1h30m\n"
	    "  default_jwt_svid_ttl: 600\n"
	    "  upstream_ca:\n"
	    "    cert_file: /etc/lanyard/up.pem\n"
	    "    key_file: /etc/lanyard/up.key\n"
	    "  audit_log: /var/log/lanyard/audit.log\n"
	    "  audit_retention: 90d\n"
	    "  node_attestors:\n"
	    "    join_token: {}\n"
	    "    x509pop:\n"
	    "      ca_bundle_path: /etc/lanyard/nodes.pem\n");
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_non_null(file);
	assert_string_equal(cfg.trust_domain, "prod.example.org");
	assert_string_equal(cfg.bind_address, "::1");
	assert_int_equal(cfg.server_port, 9443);
	assert_string_equal(cfg.socket_path, "/run/lanyard/admin/api.sock");
	assert_string_equal(cfg.data_dir, "/var/lib/lanyard");
	assert_string_equal(cfg.log_level, "debug");
	assert_string_equal(cfg.log_format, "json");
	assert_int_equal(cfg.ca_key_type, LY_KEY_EC_P384);
	assert_int_equal(cfg.ca_ttl, 48 * 3600);
	assert_int_equal(cfg.x509_svid_ttl, 5400);
	assert_int_equal(cfg.jwt_svid_ttl, 600);
	assert_string_equal(cfg.upstream_cert_path, "/etc/lanyard/up.pem");
	assert_string_equal(cfg.upstream_key_path, "/etc/lanyard/up.key");
	assert_string_equal(cfg.audit_log_path, "/var/log/lanyard/audit.log");
	assert_int_equal(cfg.audit_retention, 90 * 24 * 3600);
	assert_true(cfg.join_token_enabled);
	assert_string_equal(cfg.x509pop_ca_bundle_path, "/etc/lanyard/nodes.pem");
	ly_config_free(file);
}

static void
test_flags_override_file(void **state)
{
	struct ly_server_flags flags = LY_SERVER_FLAGS_INIT;
	struct ly_server_config cfg;
	struct ly_config *file = NULL;
	struct ly_error e;

	flags.config_path = write_cfg(
	    "server:\n"
	    "  trust_domain: file.example.org\n"
	    "  bind_address: 10.0.0.1\n"
	    "  server_port: 9443\n"
	    "  socket_path: /run/file.sock\n"
	    "  data_dir: /var/lib/file\n"
	    "  log_level: debug\n");
	flags.trust_domain = "flag.example.org";
	flags.bind_address = "127.0.0.1";
	flags.server_port = 0;
	flags.socket_path = "/tmp/flag/api.sock";
	flags.data_dir = "/tmp/flagdata";
	flags.log_level = "warn";
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_string_equal(cfg.trust_domain, "flag.example.org");
	assert_string_equal(cfg.bind_address, "127.0.0.1");
	assert_int_equal(cfg.server_port, 0); /* a flag may ask for any free port */
	assert_string_equal(cfg.socket_path, "/tmp/flag/api.sock");
	assert_string_equal(cfg.data_dir, "/tmp/flagdata");
	assert_string_equal(cfg.log_level, "warn");
	ly_config_free(file);

	/* A flag's bad value is named as the flag, even when the file is fine. */
	flags.bind_address = "localhost";
	expect_refused(&flags, LY_E_INVALID, "flag -bindAddress");
	flags.bind_address = NULL;
	flags.socket_path = "relative.sock";
	expect_refused(&flags, LY_E_INVALID, "flag -socketPath");
	flags.socket_path = NULL;
	flags.log_level = "loud";
	expect_refused(&flags, LY_E_INVALID, "flag -logLevel");
	flags.log_level = NULL;
	flags.server_port = 65536;
	expect_refused(&flags, LY_E_INVALID, "flag -serverPort");
}

static void
test_unknown_keys_refused(void **state)
{
	/* A typo, with its line and a suggestion. */
	expect_file_refused("server:\n  trust_domain: example.org\n  bind_adress: 127.0.0.1\n", ":3: unknown key "
	    "server.bind_adress (did you mean server.bind_address?)");
	/* Another top-level section. */
	expect_file_refused("agent:\n  trust_domain: example.org\n", ":1: unknown key agent");
	/* Inside upstream_ca and node_attestors. */
	expect_file_refused("server:\n  upstream_ca:\n    cert: /x\n", ":3: unknown key server.upstream_ca.cert");
	expect_file_refused("server:\n  node_attestors:\n    tpm: {}\n", ":3: unknown key server.node_attestors.tpm");
	expect_file_refused("server:\n  node_attestors:\n    join_token:\n      ttl: 5\n",
	    ":4: unknown key server.node_attestors.join_token.ttl");
	/* Inside a k8s_psat cluster (free-form names, fixed settings). */
	expect_file_refused("server:\n  node_attestors:\n    k8s_psat:\n      clusters:\n        demo:\n"
	    "          service_account_allow_list: [\"lanyard:agent\"]\n          audiance: x\n",
	    ":7: unknown key server.node_attestors.k8s_psat.clusters.demo.audiance");
}

static void
test_bad_values_refused(void **state)
{
	expect_file_refused("server:\n  trust_domain: Example.org\n", ":2: key server.trust_domain");
	expect_file_refused("server:\n  server_port: 0\n", ":2: key server.server_port");
	expect_file_refused("server:\n  server_port: 65536\n", ":2: key server.server_port");
	expect_file_refused("server:\n  server_port: -1\n", ":2: key server.server_port");
	expect_file_refused("server:\n  bind_address: example.org\n", ":2: key server.bind_address");
	expect_file_refused("server:\n  socket_path: api.sock\n", ":2: key server.socket_path");
	expect_file_refused("server:\n  data_dir: \"\"\n", ":2: key server.data_dir");
	expect_file_refused("server:\n  log_level: loud\n", ":2: key server.log_level");
	expect_file_refused("server:\n  log_format: xml\n", ":2: key server.log_format");
	expect_file_refused("server:\n  ca_key_type: dsa\n", ":2: key server.ca_key_type");
	expect_file_refused("server:\n  ca_ttl: 30s\n", ":2: key server.ca_ttl");
	expect_file_refused("server:\n  ca_ttl: 3700d\n", ":2: key server.ca_ttl");
	expect_file_refused("server:\n  ca_ttl: soon\n", ":2: key server.ca_ttl");
	expect_file_refused("server:\n  default_x509_svid_ttl: 31d\n", ":2: key server.default_x509_svid_ttl");
	expect_file_refused("server:\n  default_x509_svid_ttl: 0\n", ":2: key server.default_x509_svid_ttl");
	/* The TTL floors (lib/caps.h): a default under them would loop every entry's renewals. */
	expect_file_refused("server:\n  default_x509_svid_ttl: 19\n", "must be between 20 and");
	expect_file_refused("server:\n  default_jwt_svid_ttl: 1\n", "must be between 30 and");
	expect_file_refused("server:\n  default_jwt_svid_ttl: 2d\n", ":2: key server.default_jwt_svid_ttl");
	expect_file_refused("server:\n  upstream_ca:\n    cert_file: /x.pem\n", ":3: key server.upstream_ca.cert_file: "
	    "upstream_ca needs both");
	expect_file_refused("server:\n  upstream_ca:\n    key_file: /x.key\n", ":3: key server.upstream_ca.key_file");
	expect_file_refused("server:\n  audit_log: [a, b]\n", ":2: key server.audit_log");
	expect_file_refused("server:\n  audit_retention: 59m\n", ":2: key server.audit_retention");
	expect_file_refused("server:\n  audit_retention: 3651d\n", ":2: key server.audit_retention");
	expect_file_refused("server:\n  audit_retention: forever\n", ":2: key server.audit_retention");
	expect_file_refused("server:\n  node_attestors:\n    join_token: true\n",
	    ":3: key server.node_attestors.join_token: must be a mapping");
	expect_file_refused("server:\n  trust_domain:\n", ":2: key server.trust_domain: has no value");
}

static void
test_unreadable_file_is_io(void **state)
{
	struct ly_server_flags flags = LY_SERVER_FLAGS_INIT;
	flags.trust_domain = "example.org";
	flags.config_path = "/nonexistent-lanyard/server.yaml";
	expect_refused(&flags, LY_E_IO, "/nonexistent-lanyard/server.yaml");
	/* Broken YAML is the operator's mistake, not the system's. */
	flags.config_path = write_cfg("server:\n  trust_domain: [\n");
	expect_refused(&flags, LY_E_INVALID, cfg_path);
}

static void
test_node_attestors(void **state)
{
	struct ly_server_flags flags = LY_SERVER_FLAGS_INIT;
	struct ly_server_config cfg;
	struct ly_config *file = NULL;
	struct ly_error e;

	flags.trust_domain = "example.org";
	/* A node_attestors section without join_token turns it off. */
	flags.config_path = write_cfg("server:\n  node_attestors:\n    x509pop:\n      ca_bundle_path: /ca.pem\n");
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_false(cfg.join_token_enabled);
	assert_string_equal(cfg.x509pop_ca_bundle_path, "/ca.pem");
	ly_config_free(file);
	/* `join_token:` with no value enables it too. */
	flags.config_path = write_cfg("server:\n  node_attestors:\n    join_token:\n");
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_true(cfg.join_token_enabled);
	ly_config_free(file);
	/* A file without node_attestors keeps the default. */
	flags.config_path = write_cfg("server:\n  log_level: warn\n");
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_true(cfg.join_token_enabled);
	ly_config_free(file);
}

/* server.ratelimit (SPEC §11): both on by default, each turned off alone, values checked. */
static void
test_ratelimit(void **state)
{
	(void)state;
	struct ly_server_flags flags = LY_SERVER_FLAGS_INIT;
	struct ly_server_config cfg;
	struct ly_config *file = NULL;
	struct ly_error e;

	flags.trust_domain = "example.org";
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_true(cfg.ratelimit_attestation);
	assert_true(cfg.ratelimit_signing);
	flags.config_path = write_cfg("server:\n  ratelimit: {attestation: false, signing: false}\n");
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_false(cfg.ratelimit_attestation);
	assert_false(cfg.ratelimit_signing);
	ly_config_free(file);
	flags.config_path = write_cfg("server:\n  ratelimit:\n    signing: false\n");
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_true(cfg.ratelimit_attestation);
	assert_false(cfg.ratelimit_signing);
	ly_config_free(file);
	expect_file_refused("server:\n  ratelimit:\n    attestation: sometimes\n", "ratelimit.attestation");
	expect_file_refused("server:\n  ratelimit:\n    workload_api: false\n", "ratelimit.workload_api");
}

static void
test_psat_clusters(void **state)
{
	struct ly_config *file = NULL;
	struct ly_attest_k8s_psat *psat = (struct ly_attest_k8s_psat *)1;
	struct ly_error e;
	static const char body[] =
	    "server:\n"
	    "  node_attestors:\n"
	    "    k8s_psat:\n"
	    "      clusters:\n"
	    "        demo:\n"
	    "          service_account_allow_list: [\"lanyard:lanyard-agent\"]\n"
	    "          audience: lanyard-server\n"
	    "          api_server_url: https://127.0.0.1:6443\n"
	    "          ca_file: /etc/k8s/ca.crt\n"
	    "          token_file: /etc/k8s/token\n"
	    "        other:\n"
	    "          service_account_allow_list:\n"
	    "            - kube-system:agent\n";

	/* No file, no attestor. */
	assert_int_equal(ly_server_config_psat(NULL, "example.org", &psat, &e), LY_OK);
	assert_null(psat);

	assert_int_equal(ly_config_load_buf("t.yaml", body, sizeof(body) - 1, &file, &e), LY_OK);
	assert_int_equal(ly_server_config_psat(file, "example.org", &psat, &e), LY_OK);
	assert_non_null(psat);
	ly_attest_k8s_psat_free(psat);
	ly_config_free(file);

	/* A cluster without an allow list. */
	static const char no_allow[] = "server:\n  node_attestors:\n    k8s_psat:\n      clusters:\n        demo:\n"
	    "          audience: x\n";
	assert_int_equal(ly_config_load_buf("t.yaml", no_allow, sizeof(no_allow) - 1, &file, &e), LY_OK);
	psat = (struct ly_attest_k8s_psat *)1;
	assert_int_equal(ly_server_config_psat(file, "example.org", &psat, &e), LY_E_INVALID);
	assert_null(psat);
	assert_non_null(strstr(e.msg, "t.yaml:5: k8s_psat cluster demo: service_account_allow_list"));
	ly_config_free(file);

	/* An allow-list entry the attestor refuses: named with the cluster's line. */
	static const char bad_sa[] = "server:\n  node_attestors:\n    k8s_psat:\n      clusters:\n        demo:\n"
	    "          service_account_allow_list: [\"no-colon\"]\n";
	assert_int_equal(ly_config_load_buf("t.yaml", bad_sa, sizeof(bad_sa) - 1, &file, &e), LY_OK);
	assert_int_equal(ly_server_config_psat(file, "example.org", &psat, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "t.yaml:5: key server.node_attestors.k8s_psat.clusters.demo"));
	ly_config_free(file);

	/* k8s_psat with no cluster. */
	static const char empty[] = "server:\n  node_attestors:\n    k8s_psat: {}\n";
	assert_int_equal(ly_config_load_buf("t.yaml", empty, sizeof(empty) - 1, &file, &e), LY_OK);
	assert_int_equal(ly_server_config_psat(file, "example.org", &psat, &e), LY_E_INVALID);
	assert_non_null(strstr(e.msg, "t.yaml:3: k8s_psat needs at least one cluster"));
	ly_config_free(file);
}

/* server.datastore: sqlite3 (default) or postgres with a connection string, never echoed. */
static void
test_datastore(void **state)
{
	struct ly_server_flags flags = LY_SERVER_FLAGS_INIT;
	struct ly_server_config cfg;
	struct ly_config *file = NULL;
	struct ly_error e;

	flags.trust_domain = "example.org";
	/* Default: SQLite in the data dir, no connection string. */
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_int_equal(cfg.datastore_type, LY_DATASTORE_SQLITE3);
	assert_null(cfg.datastore_conninfo);
	flags.config_path = write_cfg("server:\n  datastore:\n    database_type: sqlite3\n");
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_int_equal(cfg.datastore_type, LY_DATASTORE_SQLITE3);
	assert_null(cfg.datastore_conninfo);
	ly_config_free(file);
	/* PostgreSQL: key=value pairs or a URI. */
	flags.config_path = write_cfg("server:\n  datastore:\n    database_type: postgres\n"
	                              "    connection_string: \"host=/run/postgresql dbname=lanyard user=lanyard\"\n");
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_int_equal(cfg.datastore_type, LY_DATASTORE_POSTGRES);
	assert_string_equal(cfg.datastore_conninfo, "host=/run/postgresql dbname=lanyard user=lanyard");
	ly_config_free(file);
	flags.config_path = write_cfg("server:\n  datastore:\n    database_type: postgres\n"
	                              "    connection_string: postgresql://lanyard@db.example.org:5432/lanyard?sslmode=verify-full\n");
	assert_int_equal(load(&flags, &cfg, &file, &e), LY_OK);
	assert_int_equal(cfg.datastore_type, LY_DATASTORE_POSTGRES);
	ly_config_free(file);

	/* Refused: another type, postgres without a string, a string for sqlite3 (or with no type). */
	expect_file_refused("server:\n  datastore:\n    database_type: mysql\n",
	    ":3: key server.datastore.database_type: must be sqlite3 or postgres");
	expect_file_refused("server:\n  datastore:\n    database_type: postgresql\n",
	    ":3: key server.datastore.database_type: must be sqlite3 or postgres");
	expect_file_refused("server:\n  datastore:\n    database_type: postgres\n",
	    ":3: key server.datastore.database_type: postgres needs server.datastore.connection_string");
	expect_file_refused("server:\n  datastore:\n    database_type: sqlite3\n    connection_string: dbname=x\n",
	    ":4: key server.datastore.connection_string: is for database_type: postgres only");
	expect_file_refused("server:\n  datastore:\n    connection_string: dbname=x\n",
	    ":3: key server.datastore.connection_string: is for database_type: postgres only");
	expect_file_refused("server:\n  datastore: postgres\n", ":2: unknown key server.datastore");
	expect_file_refused("server:\n  datastore:\n    database_type: postgres\n    connection_string: \"\"\n",
	    ":4: key server.datastore.connection_string: datastore: the PostgreSQL connection string is empty");
	expect_file_refused("server:\n  datastore:\n    type: postgres\n",
	    ":3: unknown key server.datastore.type");
	/* Malformed: refused at load, and the message does not quote the string (a password). */
	const char *bad[] = {
		"server:\n  datastore:\n    database_type: postgres\n    connection_string: \"password=Sup3rSecret dbname\"\n",
		"server:\n  datastore:\n    database_type: postgres\n    connection_string: \"Sup3rSecret\"\n",
		"server:\n  datastore:\n    database_type: postgres\n    connection_string: \"passwd=Sup3rSecret\"\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		flags.config_path = write_cfg(bad[i]);
		file = (struct ly_config *)1;
		ly_status st = load(&flags, &cfg, &file, &e);
		if (st != LY_E_INVALID || strstr(e.msg, ":4: key server.datastore.connection_string") == NULL ||
		    strstr(e.msg, "malformed") == NULL)
			fail_msg("case %zu: got %d: %s", i, st, e.msg);
		assert_null(strstr(e.msg, "Sup3rSecret"));
		assert_null(file);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flags_alone_defaults),
		cmocka_unit_test(test_trust_domain_required_and_checked),
		cmocka_unit_test(test_file_values),
		cmocka_unit_test(test_flags_override_file),
		cmocka_unit_test(test_unknown_keys_refused),
		cmocka_unit_test(test_bad_values_refused),
		cmocka_unit_test(test_unreadable_file_is_io),
		cmocka_unit_test(test_node_attestors),
		cmocka_unit_test(test_ratelimit),
		cmocka_unit_test(test_psat_clusters),
		cmocka_unit_test(test_datastore),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
