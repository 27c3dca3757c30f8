/*
 * text.h: text that comes from outside (a workload, an agent, the
 * operator's command line, a server's error message), checked before it is
 * used, and escaped before it is printed.
 *
 *   ly_text_check   1..cap bytes of UTF-8 text: shortest forms, no
 *                   surrogates, no control character (C0, DEL, C1). The one
 *                   check for audiences and other short strings a peer
 *                   sends (the Workload API, the server's agent API).
 *   ly_text_escape  one line, always, whatever the bytes: what a CLI prints
 *                   after "Error: ". Like Go's %q without the quotes:
 *                   \a \b \f \n \r \t \v \\ and \xNN for any other control
 *                   byte, DEL or byte that is not UTF-8; \u00NN for C1
 *                   controls and \u20NN for the line and paragraph
 *                   separators and the bidirectional overrides and
 *                   isolates (U+2028-202E, U+2066-2069), which reorder or
 *                   break what a terminal shows. Printable UTF-8 is kept.
 *
 * Pure: no state, any thread.
 */
#ifndef LANYARD_TEXT_H
#define LANYARD_TEXT_H

#include <stddef.h>

#include "error.h"

/*
 * Checks the NUL-terminated `s` by the rule above; `what` names it in the
 * message ("audience is over 1024 bytes"): LY_E_INVALID, or LY_E_LIMIT
 * over `cap`. The message never holds the text itself.
 */
ly_status ly_text_check(const char *what, const char *s, size_t cap, struct ly_error *err) LY_MUST_CHECK;

/*
 * Writes `s` escaped (the rule above) into `out` (`size` bytes, at least
 * 1), always NUL-terminated; cut at an escape boundary, with "..." at the
 * end, when it does not fit. Returns the length written. `s` NULL is "".
 */
size_t ly_text_escape(const char *s, char *out, size_t size);

#endif /* LANYARD_TEXT_H */
