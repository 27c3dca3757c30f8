/*
 * admin_api_fed.h: the Admin service's federation methods (SPEC §9),
 * defined in admin_api_fed.c and listed in admin_api.c's method table.
 * Each is an rpc.h unary handler: on the loop thread, `arg` the struct
 * ly_server. Not for other modules.
 */
#ifndef LANYARD_SERVER_ADMIN_API_FED_H
#define LANYARD_SERVER_ADMIN_API_FED_H

#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

/* SetFederatedBundle, ListFederatedBundles, DeleteFederatedBundle, CountFederatedBundles. */
void admin_api_fed_set_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void admin_api_fed_list_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void admin_api_fed_delete_bundle(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void admin_api_fed_count_bundles(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);

/* Create, Update, List, Get and DeleteFederationRelationship. */
void admin_api_fed_create_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void admin_api_fed_update_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void admin_api_fed_list_rels(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void admin_api_fed_get_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);
void admin_api_fed_delete_rel(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);

/* RefreshBundle: `federation refresh`, answered when the fetch ends. */
void admin_api_fed_refresh(struct ly_rpc_call *call, const uint8_t *req, size_t len, void *arg);

#endif /* LANYARD_SERVER_ADMIN_API_FED_H */
