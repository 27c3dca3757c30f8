/*
 * fuzz_agent_state.c: the agent's persisted state (agent/state.h). Each
 * input is decoded as it is (magic, version, kind, length, checksum), then
 * again with a fresh header and a correct SHA-256 around its records (the
 * input's own body when it starts like a state file, else the whole input),
 * as an agent file and as a cache file, so the fuzzer reaches the record
 * parsers behind the checksum. Whatever decodes must be whole: a cache file
 * that loads leaves every SVID it holds unexpired.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "agent/state.h"
#include "lib/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW ((int64_t)1700000000)

static void
decode_both(const uint8_t *d, size_t n)
{
	struct ly_agent_state st;
	if (ly_state_decode_agent(d, n, NULL, NOW, &st, NULL) == LY_OK && st.has_svid && st.not_after <= NOW)
		abort();
	ly_agent_state_cleanup(&st);

	struct ly_cache *c = NULL;
	if (ly_cache_new("example.org", &c, NULL) != LY_OK)
		abort();
	ly_status rc = ly_state_decode_cache(d, n, NOW, NULL, c, NULL);
	if (rc != LY_OK && ly_cache_count(c) != 0)
		abort(); /* a refused file leaves nothing behind */
	if (rc == LY_OK && ly_cache_next_expiry(c) <= NOW)
		abort(); /* expired SVIDs are dropped on load */
	ly_cache_free(c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ly_log_set_level(LY_LOG_ERROR);
	decode_both(data, size);

	const uint8_t *body = data;
	size_t blen = size;
	if (size >= 48 && memcmp(data, "LYSTATE", 8) == 0) {
		body = data + 16;
		blen = size - 48;
	}
	if (blen > 1024 * 1024)
		return 0;
	uint8_t *f = malloc(16 + blen + 32);
	if (f == NULL)
		return 0;
	for (unsigned kind = 1; kind <= 2; kind++) {
		memcpy(f, "LYSTATE", 8);
		f[8] = 0;
		f[9] = 1;
		f[10] = 0;
		f[11] = (uint8_t)kind;
		for (int i = 0; i < 4; i++)
			f[12 + i] = (uint8_t)(blen >> (8 * (3 - i)));
		if (blen > 0)
			memcpy(f + 16, body, blen);
		if (EVP_Digest(f, 16 + blen, f + 16 + blen, NULL, EVP_sha256(), NULL) != 1)
			abort();
		decode_both(f, 16 + blen + 32);
	}
	free(f);
	return 0;
}
