/*
 * log.h: one line per event, to stderr (or a caller-set sink), as text or
 * JSON.
 *
 *   log_info("agent attested, spiffe_id=%s", id);
 *
 * Every line passes through a redactor before it is written: anything that
 * looks like a JWT (three base64url segments starting "eyJ"), a PEM block,
 * or a long base64/hex run is replaced by "[redacted]". That is a net under
 * the rule, not the rule itself: never format a key, a token or a join token
 * into a log line in the first place.
 *
 * Thread-safety: ly_log() may be called from any thread; each line is
 * written with one write(2). The setters are for start-up and SIGHUP on the
 * main thread.
 */
#ifndef LANYARD_LOG_H
#define LANYARD_LOG_H

#include <stddef.h>

#include "error.h"

enum ly_log_level {
	LY_LOG_ERROR = 0,
	LY_LOG_WARN = 1,
	LY_LOG_INFO = 2,
	LY_LOG_DEBUG = 3,
};

enum ly_log_format {
	LY_LOG_TEXT = 0,
	LY_LOG_JSON = 1,
};

/* Parses "error", "warn", "info", "debug" (case-insensitive). */
ly_status ly_log_level_parse(const char *name, enum ly_log_level *out) LY_MUST_CHECK;
/* Parses "text" or "json". */
ly_status ly_log_format_parse(const char *name, enum ly_log_format *out) LY_MUST_CHECK;

void ly_log_set_level(enum ly_log_level level);
enum ly_log_level ly_log_get_level(void);
void ly_log_set_format(enum ly_log_format format);
/* Lines go to `fd` (default 2). */
void ly_log_set_fd(int fd);

void ly_log(enum ly_log_level level, const char *func, const char *fmt, ...) LY_PRINTF(3, 4);

#define log_error(...) ly_log(LY_LOG_ERROR, __func__, __VA_ARGS__)
#define log_warn(...) ly_log(LY_LOG_WARN, __func__, __VA_ARGS__)
#define log_info(...) ly_log(LY_LOG_INFO, __func__, __VA_ARGS__)
#define log_debug(...) ly_log(LY_LOG_DEBUG, __func__, __VA_ARGS__)

/*
 * Copies `in` to `out` (size `out_size`, always NUL-terminated) with secrets
 * replaced by "[redacted]". Exposed for tests and for anything else that
 * must print untrusted text.
 */
void ly_log_redact(const char *in, char *out, size_t out_size);

#endif /* LANYARD_LOG_H */
