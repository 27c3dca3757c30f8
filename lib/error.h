/*
 * error.h: Lanyard's error values.
 *
 * Every fallible function returns a ly_status (checked by the compiler
 * through LY_MUST_CHECK) and, when given a non-NULL `struct ly_error *`,
 * fills it with a code and a one-line message. Callers add context with
 * ly_error_wrap(), which keeps the code and prefixes the message, so the
 * cause is never overwritten: "load bundle: certificate 2: expired".
 *
 * Ownership: struct ly_error is a caller-owned value (no heap); passing NULL
 * is allowed everywhere and discards the detail, never the status.
 * Messages never contain key material or tokens: callers must not format
 * secrets into them.
 */
#ifndef LANYARD_ERROR_H
#define LANYARD_ERROR_H

#include <stddef.h>

#define LY_MUST_CHECK __attribute__((warn_unused_result))
#define LY_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

typedef enum ly_status {
	LY_OK = 0,
	LY_E_INVALID,     /* input refused: malformed or against a rule */
	LY_E_LIMIT,       /* input larger or deeper than a cap in caps.h */
	LY_E_NOMEM,       /* allocation failed */
	LY_E_CRYPTO,      /* OpenSSL failed on well-formed input */
	LY_E_UNTRUSTED,   /* signature or chain does not verify */
	LY_E_EXPIRED,     /* outside its validity window */
	LY_E_NOT_FOUND,   /* a looked-up thing is absent (kid, trust domain, key) */
	LY_E_IO,          /* the system refused: open, read, write */
	LY_E_UNSUPPORTED, /* well-formed but not something we accept (alg, key type) */
	LY_E_INTERNAL,    /* a broken invariant: a bug */
} ly_status;

#define LY_ERROR_MSG_MAX 512

struct ly_error {
	ly_status code;
	char msg[LY_ERROR_MSG_MAX];
};

/* Returns a constant name for a status, "invalid" for LY_E_INVALID. */
const char *ly_status_str(ly_status code);

/* Sets `err` (if non-NULL) and returns `code`, for `return ly_error_set(...)`. */
ly_status ly_error_set(struct ly_error *err, ly_status code, const char *fmt, ...)
    LY_PRINTF(3, 4);

/*
 * Like ly_error_set, and appends the reason of the oldest entry in
 * OpenSSL's error queue (if any) as ": <reason>"; clears the queue so a
 * stale entry never explains a later failure.
 */
ly_status ly_error_openssl(struct ly_error *err, ly_status code, const char *fmt, ...)
    LY_PRINTF(3, 4);

/*
 * Prefixes err->msg with "<context>: " (the message becomes "<context>"
 * when it was empty), sets err->code to `code` and returns `code`. Pass the
 * cause's code (`rc`) to keep it; another code re-classifies the failure
 * while the cause's words stay (a refusal reported as unavailable). The
 * result is cut to LY_ERROR_MSG_MAX - 1 bytes. With err == NULL returns
 * `code`.
 */
ly_status ly_error_wrap(struct ly_error *err, ly_status code, const char *fmt, ...)
    LY_PRINTF(3, 4);

/* Resets `err` to LY_OK and an empty message. */
void ly_error_clear(struct ly_error *err);

/*
 * Guard macros: evaluate a ly_status expression once and return it from the
 * enclosing function when it is not LY_OK. Only for functions that own no
 * resource at that point; otherwise use `goto out`.
 */
#define LY_TRY(expr)                                  \
	do {                                          \
		ly_status ly_try_rc_ = (expr);        \
		if (ly_try_rc_ != LY_OK)              \
			return ly_try_rc_;            \
	} while (0)

#endif /* LANYARD_ERROR_H */
