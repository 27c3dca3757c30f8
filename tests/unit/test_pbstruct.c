/*
 * test_pbstruct.c: google.protobuf.Struct <-> JSON (lib/pbstruct.h): a
 * round trip of every JSON type, the nesting cap the same both ways (what
 * the agent writes the clients read, one more level refused), sorted keys
 * packing equal claims to equal bytes, whole numbers as integers, refusals
 * of a non-object and of text that is not UTF-8.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "lib/caps.h"
#include "lib/pbstruct.h"

static json_t *
parse(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	assert_non_null(j);
	return j;
}

/* JSON -> Struct -> packed bytes -> unpacked Struct -> JSON. */
static json_t *
round_trip(const json_t *in)
{
	Google__Protobuf__Struct *st = NULL;
	struct ly_error e;
	assert_int_equal(ly_pbstruct_from_json(in, &st, &e), LY_OK);
	size_t n = google__protobuf__struct__get_packed_size(st);
	uint8_t *bytes = malloc(n + 1);
	assert_non_null(bytes);
	assert_int_equal(google__protobuf__struct__pack(st, bytes), n);
	ly_pbstruct_free(st);
	Google__Protobuf__Struct *back = google__protobuf__struct__unpack(NULL, n, bytes);
	free(bytes);
	assert_non_null(back);
	json_t *out = ly_pbstruct_to_json(back);
	google__protobuf__struct__free_unpacked(back, NULL);
	return out;
}

static void
test_round_trip_every_type(void **state)
{
	(void)state;
	json_t *in = parse("{\"sub\":\"spiffe://example.org/w\",\"aud\":[\"a\",\"b\"],\"exp\":1700000000,"
			   "\"ratio\":0.5,\"neg\":-3,\"ok\":true,\"no\":false,\"nil\":null,"
			   "\"nested\":{\"list\":[1,[2,{\"x\":\"y\"}]],\"empty\":{}},\"none\":[]}");
	json_t *out = round_trip(in);
	assert_non_null(out);
	assert_true(json_equal(in, out));
	/* exp stays an integer, not 1.7e9. */
	assert_true(json_is_integer(json_object_get(out, "exp")));
	assert_true(json_is_real(json_object_get(out, "ratio")));
	json_decref(in);
	json_decref(out);
}

/* {"a":{"a":...{}}} with `levels` objects in all. */
static json_t *
nested_objects(int levels)
{
	json_t *j = json_object();
	for (int i = 1; i < levels; i++) {
		json_t *outer = json_object();
		assert_int_equal(json_object_set_new(outer, "a", j), 0);
		j = outer;
	}
	return j;
}

/* {"a":[[...[]]]}: one object then `levels - 1` arrays. */
static json_t *
nested_arrays(int levels)
{
	json_t *j = json_array();
	for (int i = 2; i < levels; i++) {
		json_t *outer = json_array();
		assert_int_equal(json_array_append_new(outer, j), 0);
		j = outer;
	}
	json_t *o = json_object();
	assert_int_equal(json_object_set_new(o, "a", j), 0);
	return o;
}

static void
test_depth_cap_same_both_ways(void **state)
{
	(void)state;
	struct ly_error e;
	Google__Protobuf__Struct *st = NULL;

	for (int kind = 0; kind < 2; kind++) {
		json_t *(*make)(int) = kind == 0 ? nested_objects : nested_arrays;
		/* At the cap: written by one side, read back whole by the other. */
		json_t *at = make(LY_JSON_DEPTH_MAX);
		json_t *back = round_trip(at);
		assert_non_null(back);
		assert_true(json_equal(at, back));
		json_decref(back);
		json_decref(at);
		/* One level more: refused when building. */
		json_t *over = make(LY_JSON_DEPTH_MAX + 1);
		assert_int_equal(ly_pbstruct_from_json(over, &st, &e), LY_E_LIMIT);
		assert_null(st);
		assert_non_null(strstr(e.msg, "deeper"));
		json_decref(over);
	}

	/* A Struct one level too deep from elsewhere (another agent) is not printed. */
	json_t *at = nested_objects(LY_JSON_DEPTH_MAX);
	assert_int_equal(ly_pbstruct_from_json(at, &st, &e), LY_OK);
	Google__Protobuf__Struct top;
	Google__Protobuf__Value v;
	Google__Protobuf__Struct__FieldsEntry f;
	Google__Protobuf__Struct__FieldsEntry *fields[1] = { &f };
	char key[] = "a";
	/* The __init functions: the INIT macros cast away const (-Wcast-qual). */
	google__protobuf__struct__init(&top);
	google__protobuf__value__init(&v);
	google__protobuf__struct__fields_entry__init(&f);
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
	v.struct_value = st;
	f.key = key;
	f.value = &v;
	top.n_fields = 1;
	top.fields = fields;
	assert_null(ly_pbstruct_to_json(&top));
	json_t *ok = ly_pbstruct_to_json(st);
	assert_non_null(ok);
	json_decref(ok);
	ly_pbstruct_free(st);
	json_decref(at);
}

static void
test_sorted_keys_pack_equal(void **state)
{
	(void)state;
	json_t *a = parse("{\"b\":1,\"a\":{\"y\":2,\"x\":3},\"c\":\"z\"}");
	json_t *b = parse("{\"c\":\"z\",\"a\":{\"x\":3,\"y\":2},\"b\":1}");
	Google__Protobuf__Struct *sa = NULL, *sb = NULL;
	struct ly_error e;

	assert_int_equal(ly_pbstruct_from_json(a, &sa, &e), LY_OK);
	assert_int_equal(ly_pbstruct_from_json(b, &sb, &e), LY_OK);
	assert_string_equal(sa->fields[0]->key, "a");
	assert_string_equal(sa->fields[2]->key, "c");
	size_t na = google__protobuf__struct__get_packed_size(sa);
	size_t nb = google__protobuf__struct__get_packed_size(sb);
	assert_int_equal(na, nb);
	uint8_t *pa = malloc(na), *pb = malloc(nb);
	assert_non_null(pa);
	assert_non_null(pb);
	google__protobuf__struct__pack(sa, pa);
	google__protobuf__struct__pack(sb, pb);
	assert_memory_equal(pa, pb, na);
	free(pa);
	free(pb);
	ly_pbstruct_free(sa);
	ly_pbstruct_free(sb);
	json_decref(a);
	json_decref(b);
}

static void
test_refusals(void **state)
{
	(void)state;
	struct ly_error e;
	Google__Protobuf__Struct *st = (Google__Protobuf__Struct *)1;

	json_t *arr = parse("[1,2]");
	assert_int_equal(ly_pbstruct_from_json(arr, &st, &e), LY_E_INVALID);
	assert_null(st);
	json_decref(arr);

	/* Not UTF-8, in a value and in a key: not printed. */
	char bad[] = "\xff\xfe";
	char key[] = "k";
	Google__Protobuf__Value v;
	Google__Protobuf__Struct__FieldsEntry f;
	Google__Protobuf__Struct__FieldsEntry *fields[1] = { &f };
	Google__Protobuf__Struct top;
	google__protobuf__struct__init(&top);
	google__protobuf__value__init(&v);
	google__protobuf__struct__fields_entry__init(&f);
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v.string_value = bad;
	f.key = key;
	f.value = &v;
	top.n_fields = 1;
	top.fields = fields;
	assert_null(ly_pbstruct_to_json(&top));
	v.string_value = key;
	f.key = bad;
	assert_null(ly_pbstruct_to_json(&top));
	/* A field without a value (a malformed map entry) is refused, not guessed. */
	f.key = key;
	f.value = NULL;
	assert_null(ly_pbstruct_to_json(&top));

	/* No Struct at all: the empty object. */
	json_t *empty = ly_pbstruct_to_json(NULL);
	assert_non_null(empty);
	assert_int_equal(json_object_size(empty), 0);
	json_decref(empty);
	ly_pbstruct_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_every_type),
		cmocka_unit_test(test_depth_cap_same_both_ways),
		cmocka_unit_test(test_sorted_keys_pack_equal),
		cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
