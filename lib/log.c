/* log.c: see log.h. */
#include "log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "caps.h"

static atomic_int log_level = LY_LOG_INFO;
static atomic_int log_format = LY_LOG_TEXT;
static atomic_int log_fd = 2;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

/* A run of base64 this long that is not plain hex is treated as a secret. */
#define REDACT_BASE64_RUN 64

ly_status
ly_log_level_parse(const char *name, enum ly_log_level *out)
{
	if (name == NULL)
		return LY_E_INVALID;
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (enum ly_log_level)i;
			return LY_OK;
		}
	}
	if (strcasecmp(name, "warning") == 0) {
		*out = LY_LOG_WARN;
		return LY_OK;
	}
	return LY_E_INVALID;
}

ly_status
ly_log_format_parse(const char *name, enum ly_log_format *out)
{
	if (name != NULL && strcasecmp(name, "text") == 0) {
		*out = LY_LOG_TEXT;
		return LY_OK;
	}
	if (name != NULL && strcasecmp(name, "json") == 0) {
		*out = LY_LOG_JSON;
		return LY_OK;
	}
	return LY_E_INVALID;
}

void ly_log_set_level(enum ly_log_level level) { atomic_store(&log_level, (int)level); }
enum ly_log_level ly_log_get_level(void) { return (enum ly_log_level)atomic_load(&log_level); }
void ly_log_set_format(enum ly_log_format format) { atomic_store(&log_format, (int)format); }
void ly_log_set_fd(int fd) { atomic_store(&log_fd, fd); }

static bool
is_b64url(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '_';
}

static bool
is_b64any(char c)
{
	/* '=' is left out: it is padding, or a key=value separator in a line. */
	return is_b64url(c) || c == '+' || c == '/';
}

/* Length of a JWT-shaped run at `s` (eyJ...<.>...), or 0. */
static size_t
jwt_run(const char *s)
{
	if (strncmp(s, "eyJ", 3) != 0)
		return 0;
	size_t n = 0, dots = 0;
	while (is_b64url(s[n]) || s[n] == '.') {
		if (s[n] == '.')
			dots++;
		n++;
	}
	return dots >= 1 ? n : 0;
}

/* Length of a PEM block at `s`, through its END line (or to the end). */
static size_t
pem_run(const char *s)
{
	if (strncmp(s, "-----BEGIN", 10) != 0)
		return 0;
	const char *end = strstr(s + 10, "-----END");
	if (end == NULL)
		return strlen(s);
	const char *close = strstr(end + 8, "-----");
	if (close == NULL)
		return strlen(s);
	return (size_t)(close + 5 - s);
}

/* Length of a long base64 run at `s` that is not plain hex, or 0. */
static size_t
base64_run(const char *s)
{
	size_t n = 0;
	bool hex_only = true;
	while (is_b64any(s[n])) {
		if (!isxdigit((unsigned char)s[n]))
			hex_only = false;
		n++;
	}
	return (n >= REDACT_BASE64_RUN && !hex_only) ? n : 0;
}

void
ly_log_redact(const char *in, char *out, size_t out_size)
{
	static const char mark[] = "[redacted]";
	size_t o = 0;

	if (out_size == 0)
		return;
	for (size_t i = 0; in[i] != '\0' && o + 1 < out_size;) {
		char prev = i > 0 ? in[i - 1] : ' ';
		size_t skip = pem_run(in + i);
		if (skip == 0 && !is_b64url(prev))
			skip = jwt_run(in + i);
		if (skip == 0 && !is_b64any(prev))
			skip = base64_run(in + i);
		if (skip == 0) {
			out[o++] = in[i++];
			continue;
		}
		size_t m = strlen(mark);
		if (m > out_size - 1 - o)
			m = out_size - 1 - o;
		memcpy(out + o, mark, m);
		o += m;
		i += skip;
	}
	out[o] = '\0';
}

/* Escapes `in` for a JSON string and writes it at out[*o]. */
static void
json_escape(const char *in, char *out, size_t out_size, size_t *o)
{
	for (size_t i = 0; in[i] != '\0' && *o + 7 < out_size; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '"' || c == '\\') {
			out[(*o)++] = '\\';
			out[(*o)++] = (char)c;
		} else if (c < 0x20) {
			*o += (size_t)snprintf(out + *o, out_size - *o, "\\u%04x", c);
		} else {
			out[(*o)++] = (char)c;
		}
	}
	out[*o] = '\0';
}

/* Replaces control characters so one event stays one line. */
static void
flatten(char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20)
			*s = ' ';
	}
}

void
ly_log(enum ly_log_level level, const char *func, const char *fmt, ...)
{
	if ((int)level > atomic_load(&log_level))
		return;

	char raw[LY_LOG_LINE_MAX];
	char clean[LY_LOG_LINE_MAX];
	char line[LY_LOG_LINE_MAX * 2];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	ly_log_redact(raw, clean, sizeof(clean));

	struct timespec ts;
	struct tm tm;
	char when[40];
	(void)clock_gettime(CLOCK_REALTIME, &ts);
	(void)gmtime_r(&ts.tv_sec, &tm);
	size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	(void)snprintf(when + w, sizeof(when) - w, ".%03ldZ", ts.tv_nsec / 1000000);

	const char *lvl = level_names[level <= LY_LOG_DEBUG ? level : LY_LOG_DEBUG];
	size_t o = 0;
	if (atomic_load(&log_format) == LY_LOG_JSON) {
		o = (size_t)snprintf(line, sizeof(line), "{\"time\":\"%s\",\"level\":\"%s\",\"func\":\"", when, lvl);
		json_escape(func, line, sizeof(line), &o);
		o += (size_t)snprintf(line + o, sizeof(line) - o, "\",\"msg\":\"");
		json_escape(clean, line, sizeof(line), &o);
		o += (size_t)snprintf(line + o, sizeof(line) - o, "\"}\n");
	} else {
		flatten(clean);
		o = (size_t)snprintf(line, sizeof(line), "%s %s %s: %s\n", when, lvl, func, clean);
	}
	if (o >= sizeof(line)) {
		o = sizeof(line) - 1;
		line[o - 1] = '\n';
	}
	ssize_t wr = write(atomic_load(&log_fd), line, o);
	(void)wr; /* Nowhere to report a failed log write. */
}
