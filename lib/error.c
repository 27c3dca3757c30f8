/* error.c: see error.h. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

const char *
ly_status_str(ly_status code)
{
	switch (code) {
	case LY_OK: return "ok";
	case LY_E_INVALID: return "invalid";
	case LY_E_LIMIT: return "limit exceeded";
	case LY_E_NOMEM: return "out of memory";
	case LY_E_CRYPTO: return "crypto failure";
	case LY_E_UNTRUSTED: return "untrusted";
	case LY_E_EXPIRED: return "expired";
	case LY_E_NOT_FOUND: return "not found";
	case LY_E_IO: return "i/o error";
	case LY_E_UNSUPPORTED: return "unsupported";
	case LY_E_INTERNAL: return "internal error";
	}
	return "unknown";
}

LY_PRINTF(3, 0) static void
error_vset(struct ly_error *err, ly_status code, const char *fmt, va_list ap)
{
	err->code = code;
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	if (n < 0)
		err->msg[0] = '\0';
}

ly_status
ly_error_set(struct ly_error *err, ly_status code, const char *fmt, ...)
{
	if (err != NULL) {
		va_list ap;
		va_start(ap, fmt);
		error_vset(err, code, fmt, ap);
		va_end(ap);
	}
	return code;
}

ly_status
ly_error_openssl(struct ly_error *err, ly_status code, const char *fmt, ...)
{
	unsigned long e = ERR_get_error();

	if (err != NULL) {
		va_list ap;
		va_start(ap, fmt);
		error_vset(err, code, fmt, ap);
		va_end(ap);
		const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
		if (reason != NULL) {
			size_t len = strlen(err->msg);
			(void)snprintf(err->msg + len, sizeof(err->msg) - len, ": %s", reason);
		}
	}
	ERR_clear_error();
	return code;
}

ly_status
ly_error_wrap(struct ly_error *err, ly_status code, const char *fmt, ...)
{
	if (err == NULL)
		return code;

	char prefix[LY_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (n < 0)
		prefix[0] = '\0';

	/* Truncation is expected and harmless: the message is a diagnostic. */
	char joined[LY_ERROR_MSG_MAX * 2 + 2];
	size_t plen = strnlen(prefix, LY_ERROR_MSG_MAX);
	size_t olen = strnlen(err->msg, LY_ERROR_MSG_MAX);
	memcpy(joined, prefix, plen);
	size_t o = plen;
	if (olen > 0) {
		joined[o++] = ':';
		joined[o++] = ' ';
		memcpy(joined + o, err->msg, olen);
		o += olen;
	}
	if (o >= sizeof(err->msg))
		o = sizeof(err->msg) - 1;
	memcpy(err->msg, joined, o);
	err->msg[o] = '\0';
	err->code = code;
	return code;
}

void
ly_error_clear(struct ly_error *err)
{
	if (err != NULL) {
		err->code = LY_OK;
		err->msg[0] = '\0';
	}
}
