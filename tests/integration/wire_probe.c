/*
 * wire_probe.c: the C side of the Workload API wire-compatibility test.
 *
 *   wire_probe decode <Message>   reads one protobuf message from stdin,
 *                                 decodes it with our protoc-c code and
 *                                 prints every field as "path=value" lines;
 *   wire_probe encode <Message>   writes a message with known field values.
 *
 * wire_compat.py drives it with messages made by Google's Python protobuf
 * from the same .proto, so a wrong field number or type on our side shows
 * up as a mismatch. Exit 0 on success, 1 on a decode failure, 2 on usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workload.pb-c.h"

#define PROBE_INPUT_MAX (1024 * 1024)

static void
print_bytes(const char *name, ProtobufCBinaryData b)
{
	printf("%s=", name);
	for (size_t i = 0; i < b.len; i++)
		printf("%02x", b.data[i]);
	printf("\n");
}

static int
decode(const char *type, const uint8_t *buf, size_t len)
{
	if (strcmp(type, "X509SVIDResponse") == 0) {
		X509SVIDResponse *m = x509_svidresponse__unpack(NULL, len, buf);
		if (m == NULL)
			return 1;
		for (size_t i = 0; i < m->n_svids; i++) {
			printf("svids[%zu].spiffe_id=%s\n", i, m->svids[i]->spiffe_id);
			print_bytes("x509_svid", m->svids[i]->x509_svid);
			print_bytes("x509_svid_key", m->svids[i]->x509_svid_key);
			print_bytes("bundle", m->svids[i]->bundle);
			printf("hint=%s\n", m->svids[i]->hint);
		}
		for (size_t i = 0; i < m->n_crl; i++)
			print_bytes("crl", m->crl[i]);
		for (size_t i = 0; i < m->n_federated_bundles; i++) {
			printf("federated_bundles.key=%s\n", m->federated_bundles[i]->key);
			print_bytes("federated_bundles.value", m->federated_bundles[i]->value);
		}
		x509_svidresponse__free_unpacked(m, NULL);
	} else if (strcmp(type, "X509BundlesResponse") == 0) {
		X509BundlesResponse *m = x509_bundles_response__unpack(NULL, len, buf);
		if (m == NULL)
			return 1;
		for (size_t i = 0; i < m->n_crl; i++)
			print_bytes("crl", m->crl[i]);
		for (size_t i = 0; i < m->n_bundles; i++) {
			printf("bundles.key=%s\n", m->bundles[i]->key);
			print_bytes("bundles.value", m->bundles[i]->value);
		}
		x509_bundles_response__free_unpacked(m, NULL);
	} else if (strcmp(type, "JWTSVIDRequest") == 0) {
		JWTSVIDRequest *m = jwtsvidrequest__unpack(NULL, len, buf);
		if (m == NULL)
			return 1;
		for (size_t i = 0; i < m->n_audience; i++)
			printf("audience=%s\n", m->audience[i]);
		printf("spiffe_id=%s\n", m->spiffe_id);
		jwtsvidrequest__free_unpacked(m, NULL);
	} else if (strcmp(type, "JWTSVIDResponse") == 0) {
		JWTSVIDResponse *m = jwtsvidresponse__unpack(NULL, len, buf);
		if (m == NULL)
			return 1;
		for (size_t i = 0; i < m->n_svids; i++)
			printf("svids[%zu]=%s|%s|%s\n", i, m->svids[i]->spiffe_id, m->svids[i]->svid,
			    m->svids[i]->hint);
		jwtsvidresponse__free_unpacked(m, NULL);
	} else if (strcmp(type, "JWTBundlesResponse") == 0) {
		JWTBundlesResponse *m = jwtbundles_response__unpack(NULL, len, buf);
		if (m == NULL)
			return 1;
		for (size_t i = 0; i < m->n_bundles; i++) {
			printf("bundles.key=%s\n", m->bundles[i]->key);
			print_bytes("bundles.value", m->bundles[i]->value);
		}
		jwtbundles_response__free_unpacked(m, NULL);
	} else if (strcmp(type, "ValidateJWTSVIDRequest") == 0) {
		ValidateJWTSVIDRequest *m = validate_jwtsvidrequest__unpack(NULL, len, buf);
		if (m == NULL)
			return 1;
		printf("audience=%s\nsvid=%s\n", m->audience, m->svid);
		validate_jwtsvidrequest__free_unpacked(m, NULL);
	} else {
		fprintf(stderr, "wire_probe: unknown message type %s\n", type);
		return 2;
	}
	return 0;
}

static int
encode_validate_response(void)
{
	/* claims = {"sub": "spiffe://example.org/w", "exp": 1700000000, "aud": ["a", "b"]} */
	Google__Protobuf__Value sub = GOOGLE__PROTOBUF__VALUE__INIT;
	sub.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	sub.string_value = (char *)"spiffe://example.org/w";
	Google__Protobuf__Value exp = GOOGLE__PROTOBUF__VALUE__INIT;
	exp.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
	exp.number_value = 1700000000.0;
	Google__Protobuf__Value a = GOOGLE__PROTOBUF__VALUE__INIT, b = GOOGLE__PROTOBUF__VALUE__INIT;
	a.kind_case = b.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	a.string_value = (char *)"a";
	b.string_value = (char *)"b";
	Google__Protobuf__Value *items[] = { &a, &b };
	Google__Protobuf__ListValue list = GOOGLE__PROTOBUF__LIST_VALUE__INIT;
	list.n_values = 2;
	list.values = items;
	Google__Protobuf__Value aud = GOOGLE__PROTOBUF__VALUE__INIT;
	aud.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
	aud.list_value = &list;

	Google__Protobuf__Struct__FieldsEntry e_sub = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry e_exp = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry e_aud = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	e_sub.key = (char *)"sub";
	e_sub.value = &sub;
	e_exp.key = (char *)"exp";
	e_exp.value = &exp;
	e_aud.key = (char *)"aud";
	e_aud.value = &aud;
	Google__Protobuf__Struct__FieldsEntry *fields[] = { &e_sub, &e_exp, &e_aud };
	Google__Protobuf__Struct claims = GOOGLE__PROTOBUF__STRUCT__INIT;
	claims.n_fields = 3;
	claims.fields = fields;

	ValidateJWTSVIDResponse m = VALIDATE_JWTSVIDRESPONSE__INIT;
	m.spiffe_id = (char *)"spiffe://example.org/w";
	m.claims = &claims;

	size_t len = validate_jwtsvidresponse__get_packed_size(&m);
	uint8_t *out = malloc(len);
	if (out == NULL)
		return 1;
	validate_jwtsvidresponse__pack(&m, out);
	int rc = fwrite(out, 1, len, stdout) == len ? 0 : 1;
	free(out);
	return rc;
}

static int
encode_x509_svid_response(void)
{
	static uint8_t cert[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
	static uint8_t key[] = { 0x30, 0x03, 0x02, 0x01, 0x02 };
	static uint8_t bundle[] = { 0x30, 0x03, 0x02, 0x01, 0x03 };
	X509SVID svid = X509_SVID__INIT;
	svid.spiffe_id = (char *)"spiffe://example.org/w";
	svid.x509_svid.data = cert;
	svid.x509_svid.len = sizeof(cert);
	svid.x509_svid_key.data = key;
	svid.x509_svid_key.len = sizeof(key);
	svid.bundle.data = bundle;
	svid.bundle.len = sizeof(bundle);
	svid.hint = (char *)"internal";
	X509SVID *svids[] = { &svid };
	X509SVIDResponse__FederatedBundlesEntry fed = X509_SVIDRESPONSE__FEDERATED_BUNDLES_ENTRY__INIT;
	fed.key = (char *)"spiffe://other.org";
	fed.value.data = bundle;
	fed.value.len = sizeof(bundle);
	X509SVIDResponse__FederatedBundlesEntry *feds[] = { &fed };
	X509SVIDResponse m = X509_SVIDRESPONSE__INIT;
	m.n_svids = 1;
	m.svids = svids;
	m.n_federated_bundles = 1;
	m.federated_bundles = feds;

	size_t len = x509_svidresponse__get_packed_size(&m);
	uint8_t *out = malloc(len);
	if (out == NULL)
		return 1;
	x509_svidresponse__pack(&m, out);
	int rc = fwrite(out, 1, len, stdout) == len ? 0 : 1;
	free(out);
	return rc;
}

int
main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: wire_probe decode|encode <Message>\n");
		return 2;
	}
	if (strcmp(argv[1], "encode") == 0) {
		if (strcmp(argv[2], "ValidateJWTSVIDResponse") == 0)
			return encode_validate_response();
		if (strcmp(argv[2], "X509SVIDResponse") == 0)
			return encode_x509_svid_response();
		fprintf(stderr, "wire_probe: cannot encode %s\n", argv[2]);
		return 2;
	}
	if (strcmp(argv[1], "decode") != 0) {
		fprintf(stderr, "usage: wire_probe decode|encode <Message>\n");
		return 2;
	}
	uint8_t *buf = malloc(PROBE_INPUT_MAX);
	if (buf == NULL)
		return 1;
	size_t len = fread(buf, 1, PROBE_INPUT_MAX, stdin);
	int rc = decode(argv[2], buf, len);
	free(buf);
	if (rc == 1)
		fprintf(stderr, "wire_probe: %s did not decode\n", argv[2]);
	return rc;
}
