/* tw_service: the ToolService gRPC handlers (ListTools, Execute) over tw_tools. */
#ifndef TW_SERVICE_H
#define TW_SERVICE_H

struct cm_rpc_server;

/* Registers ListTools and Execute on |srv|. 0 or a cm_err code. */
int tw_service_register(struct cm_rpc_server *srv);

#endif
