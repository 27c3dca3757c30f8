/*
 * bundle_pb.h: a trust bundle as its protobuf message (proto/agent.proto:
 * Bundle), one place for the admin API's GetBundle and the agent API's
 * replies (its bundle fetch and enrolment).
 *
 * A view: the X.509 authorities' DER is BORROWED from the bundle (valid
 * while it lives unchanged); the trust domain, the JWT authorities' kids and
 * their keys as SubjectPublicKeyInfo DER are the view's own, freed by
 * ly_bundle_pb_cleanup. The bundle carries no key expiry: expires_at is 0
 * ("not said"); a refresh hint past INT64_MAX is sent as INT64_MAX.
 */
#ifndef LANYARD_SERVER_BUNDLE_PB_H
#define LANYARD_SERVER_BUNDLE_PB_H

#include <stddef.h>

#include "agent.pb-c.h"
#include "lib/bundle.h"
#include "lib/caps.h"
#include "lib/error.h"

struct ly_bundle_pb {
	Lanyard__Agent__V1__Bundle msg;
	char td[LY_TRUST_DOMAIN_MAX + 1];
	ProtobufCBinaryData *x509;
	Lanyard__Agent__V1__JWTAuthority *jwt;
	Lanyard__Agent__V1__JWTAuthority **jwt_ptrs;
	size_t n_jwt;
};

/*
 * *p: `b` as a message ready to pack. LY_E_NOMEM, or LY_E_CRYPTO when a
 * JWT authority's key cannot be encoded; on failure *p holds nothing.
 */
ly_status ly_bundle_pb_make(const struct ly_bundle *b, struct ly_bundle_pb *p, struct ly_error *err) LY_MUST_CHECK;
/* Frees what the view owns; a zeroed or cleaned-up view is fine. */
void ly_bundle_pb_cleanup(struct ly_bundle_pb *p);

#endif /* LANYARD_SERVER_BUNDLE_PB_H */
