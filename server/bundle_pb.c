/* bundle_pb.c: see bundle_pb.h. */
#include "server/bundle_pb.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

void
ly_bundle_pb_cleanup(struct ly_bundle_pb *p)
{
	for (size_t i = 0; p->jwt != NULL && i < p->n_jwt; i++) {
		free(p->jwt[i].kid);
		OPENSSL_free(p->jwt[i].public_key.data);
	}
	free(p->x509);
	free(p->jwt);
	free(p->jwt_ptrs);
	memset(p, 0, sizeof(*p));
}

ly_status
ly_bundle_pb_make(const struct ly_bundle *b, struct ly_bundle_pb *p, struct ly_error *err)
{
	size_t nx = ly_bundle_x509_authority_count(b), nj = ly_bundle_jwt_authority_count(b);
	ly_status rc = LY_OK;

	memset(p, 0, sizeof(*p));
	lanyard__agent__v1__bundle__init(&p->msg);
	(void)snprintf(p->td, sizeof(p->td), "%s", ly_bundle_trust_domain(b));
	p->x509 = calloc(nx + 1, sizeof(*p->x509));
	p->jwt = calloc(nj + 1, sizeof(*p->jwt));
	p->jwt_ptrs = calloc(nj + 1, sizeof(*p->jwt_ptrs));
	if (p->x509 == NULL || p->jwt == NULL || p->jwt_ptrs == NULL) {
		rc = ly_error_set(err, LY_E_NOMEM, "bundle: out of memory");
		goto out;
	}
	for (size_t i = 0; i < nx; i++) {
		const struct ly_buf *der = ly_bundle_x509_authority(b, i);
		p->x509[i].data = der->data;
		p->x509[i].len = der->len;
	}
	for (size_t i = 0; i < nj; i++) {
		Lanyard__Agent__V1__JWTAuthority *j = &p->jwt[i];
		unsigned char *spki = NULL;
		lanyard__agent__v1__jwtauthority__init(j);
		p->n_jwt = i + 1;
		int len = i2d_PUBKEY(ly_bundle_jwt_authority_key(b, i), &spki);
		if (len <= 0) {
			rc = ly_error_openssl(err, LY_E_CRYPTO, "bundle: JWT authority %zu", i);
			goto out;
		}
		j->public_key.data = spki;
		j->public_key.len = (size_t)len;
		if ((j->kid = strdup(ly_bundle_jwt_authority_kid(b, i))) == NULL) {
			rc = ly_error_set(err, LY_E_NOMEM, "bundle: out of memory");
			goto out;
		}
		/* The bundle does not carry key expiry: 0 means "not said". */
		j->expires_at = 0;
		p->jwt_ptrs[i] = j;
	}
	p->msg.trust_domain = p->td;
	p->msg.n_x509_authorities = nx;
	p->msg.x509_authorities = p->x509;
	p->msg.n_jwt_authorities = nj;
	p->msg.jwt_authorities = p->jwt_ptrs;
	p->msg.sequence = ly_bundle_sequence(b);
	p->msg.refresh_hint = ly_bundle_refresh_hint(b) > INT64_MAX ? INT64_MAX : (int64_t)ly_bundle_refresh_hint(b);
out:
	if (rc != LY_OK)
		ly_bundle_pb_cleanup(p);
	return rc;
}
