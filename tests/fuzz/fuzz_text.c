/*
 * fuzz_text.c: lib/text.h on any bytes. ly_text_check must not read past
 * its cap nor accept a control byte; ly_text_escape must always give one
 * line of printable text (no byte under 0x20, no DEL), NUL-terminated
 * within its buffer, whatever the size of that buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	char out[256];

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (ly_text_check("t", s, 64, NULL) == LY_OK) {
		for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
			if (*p < 0x20 || *p == 0x7f)
				abort();
		}
	}
	/* Every buffer size from 1 to the whole, the first byte choosing a cut. */
	size_t cut = size > 0 ? 1 + data[0] % sizeof(out) : sizeof(out);
	size_t n = ly_text_escape(s, out, cut);
	if (n >= cut || out[n] != '\0' || strlen(out) != n)
		abort();
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)out[i];
		if (c < 0x20 || c == 0x7f)
			abort();
	}
	free(s);
	return 0;
}
