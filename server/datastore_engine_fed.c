/*
 * datastore_engine_fed.c: the federation operations of datastore.h
 * (SPEC §9), written once over a back end's dialect (datastore_engine.h).
 */
#include "server/datastore_engine.h"

#include "server/datastore_internal.h"

#define STUB(what) ly_error_set(err, LY_E_UNSUPPORTED, "datastore: %s: not implemented yet", what)

ly_status
ly_ds_engine_fed_bundle_put(struct ly_datastore *ds, const struct ly_bundle *bundle, int64_t *revision,
    struct ly_error *err)
{
	(void)ds, (void)bundle, (void)revision;
	return STUB("federated bundle put");
}

ly_status
ly_ds_engine_fed_bundle_get(struct ly_datastore *ds, const char *td, struct ly_ds_fed_bundle **out,
    struct ly_error *err)
{
	(void)ds, (void)td, (void)out;
	return STUB("federated bundle get");
}

ly_status
ly_ds_engine_fed_bundle_list(struct ly_datastore *ds, struct ly_ds_fed_bundle_list *out, struct ly_error *err)
{
	(void)ds, (void)out;
	return STUB("federated bundle list");
}

ly_status
ly_ds_engine_fed_bundle_delete(struct ly_datastore *ds, const char *td, enum ly_fed_delete_mode mode,
    int64_t *revision, struct ly_error *err)
{
	(void)ds, (void)td, (void)mode, (void)revision;
	return STUB("federated bundle delete");
}

ly_status
ly_ds_engine_fed_bundle_count(struct ly_datastore *ds, size_t *out, struct ly_error *err)
{
	(void)ds, (void)out;
	return STUB("federated bundle count");
}

ly_status
ly_ds_engine_fed_rel_create(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel, const struct ly_bundle *bundle,
    int64_t *revision, struct ly_error *err)
{
	(void)ds, (void)rel, (void)bundle, (void)revision;
	return STUB("federation relationship create");
}

ly_status
ly_ds_engine_fed_rel_update(struct ly_datastore *ds, const struct ly_ds_fed_rel *rel, const struct ly_bundle *bundle,
    int64_t *revision, struct ly_error *err)
{
	(void)ds, (void)rel, (void)bundle, (void)revision;
	return STUB("federation relationship update");
}

ly_status
ly_ds_engine_fed_rel_get(struct ly_datastore *ds, const char *td, struct ly_ds_fed_rel **out, struct ly_error *err)
{
	(void)ds, (void)td, (void)out;
	return STUB("federation relationship get");
}

ly_status
ly_ds_engine_fed_rel_list(struct ly_datastore *ds, struct ly_ds_fed_rel_list *out, struct ly_error *err)
{
	(void)ds, (void)out;
	return STUB("federation relationship list");
}

ly_status
ly_ds_engine_fed_rel_delete(struct ly_datastore *ds, const char *td, int64_t *revision, struct ly_error *err)
{
	(void)ds, (void)td, (void)revision;
	return STUB("federation relationship delete");
}
