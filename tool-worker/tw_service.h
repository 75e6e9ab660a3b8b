/* tw_service: the ToolService gRPC handlers (ListTools, Execute) over tw_tools. */
#ifndef TW_SERVICE_H
#define TW_SERVICE_H

struct cm_rpc_server;
struct cm_rpc_events;
struct cm_status;

/* Registers ListTools, Execute and Status on |srv|, and WatchStatus served by
 * |status_hub| through |ev| (which then hears every change of the background
 * tasks). 0 or a cm_err code. */
int tw_service_register(struct cm_rpc_server *srv, struct cm_status *status_hub,
                        struct cm_rpc_events *ev);

#endif
