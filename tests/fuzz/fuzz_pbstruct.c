/*
 * fuzz_pbstruct.c: google.protobuf.Struct <-> JSON (lib/pbstruct), both ways
 * a peer can feed it. The first byte picks the input:
 *   even: the rest is JSON text, as the agent reads a JWT-SVID's claims
 *         (ly_pbstruct_from_json);
 *   odd:  the rest is a packed Struct, as a client reads
 *         ValidateJWTSVIDResponse.claims off the wire (ly_pbstruct_to_json).
 * Whatever is accepted must reach a fixpoint after one round trip: the JSON
 * written from a Struct, read back and written again, is equal; and two
 * Structs built from equal JSON pack to equal bytes (keys are sorted).
 * abort() otherwise.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lib/pbstruct.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The packed bytes of `st` (free()), or NULL when out of memory. */
static uint8_t *
pack(const Google__Protobuf__Struct *st, size_t *len)
{
	*len = google__protobuf__struct__get_packed_size(st);
	uint8_t *buf = malloc(*len + 1);
	if (buf != NULL && google__protobuf__struct__pack(st, buf) != *len)
		abort();
	return buf;
}

/*
 * `j1` was written from a Struct. Reads it back and writes it again: the
 * result must equal `j1`, and the Struct read back must pack to the same
 * bytes as one read from the rewritten JSON.
 */
static void
check_fixpoint(const json_t *j1)
{
	Google__Protobuf__Struct *s2 = NULL, *s3 = NULL;
	json_t *j2 = NULL;
	uint8_t *p2 = NULL, *p3 = NULL;
	size_t n2 = 0, n3 = 0;

	/* What to_json wrote is within the depth cap, so from_json takes it. */
	if (ly_pbstruct_from_json(j1, &s2, NULL) != LY_OK)
		abort();
	j2 = ly_pbstruct_to_json(s2);
	if (j2 == NULL || !json_equal(j1, j2))
		abort();
	if (ly_pbstruct_from_json(j2, &s3, NULL) != LY_OK)
		abort();
	p2 = pack(s2, &n2);
	p3 = pack(s3, &n3);
	if (p2 != NULL && p3 != NULL && (n2 != n3 || memcmp(p2, p3, n2) != 0))
		abort();
	free(p2);
	free(p3);
	json_decref(j2);
	ly_pbstruct_free(s2);
	ly_pbstruct_free(s3);
}

static void
from_json_text(const uint8_t *data, size_t size)
{
	Google__Protobuf__Struct *st = NULL;
	json_t *obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (obj == NULL)
		return;
	if (ly_pbstruct_from_json(obj, &st, NULL) == LY_OK) {
		if (!json_is_object(obj))
			abort();
		/* Numbers may change kind once (1.0 -> 1, 2^60 -> real): compare from the first rewrite on. */
		json_t *j1 = ly_pbstruct_to_json(st);
		if (j1 == NULL)
			abort();
		check_fixpoint(j1);
		json_decref(j1);
	}
	ly_pbstruct_free(st);
	json_decref(obj);
}

static void
from_wire(const uint8_t *data, size_t size)
{
	Google__Protobuf__Struct *st = google__protobuf__struct__unpack(NULL, size, data);
	if (st == NULL)
		return;
	json_t *j1 = ly_pbstruct_to_json(st); /* NULL: too deep, not UTF-8, NaN... refused */
	if (j1 != NULL) {
		if (!json_is_object(j1))
			abort();
		check_fixpoint(j1);
		json_decref(j1);
	}
	google__protobuf__struct__free_unpacked(st, NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		from_wire(data + 1, size - 1);
	else
		from_json_text(data + 1, size - 1);
	return 0;
}
