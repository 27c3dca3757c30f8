/* rlimit.c: see rlimit.h. */
#include "rlimit.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>

ly_status
ly_rlimit_raise_nofile(uint64_t at_most, uint64_t *now, struct ly_error *err)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return ly_error_set(err, LY_E_IO, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
	rlim_t want = rl.rlim_max;
	if (at_most != 0 && (want == RLIM_INFINITY || want > (rlim_t)at_most))
		want = (rlim_t)at_most;
	if (want > rl.rlim_cur) {
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			return ly_error_set(err, LY_E_IO, "setrlimit(RLIMIT_NOFILE, %llu): %s", (unsigned long long)want,
			    strerror(errno));
	}
	if (now != NULL)
		*now = (uint64_t)rl.rlim_cur;
	return LY_OK;
}
