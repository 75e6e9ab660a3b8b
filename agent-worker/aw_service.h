/* aw_service: the AgentService gRPC handlers; wires the agent loop to Bedrock,
 * the tool-workers and the session store. Owns none of them. */
#ifndef AW_SERVICE_H
#define AW_SERVICE_H

struct cm_rpc_server;
struct aw_bedrock;
struct aw_tools;
struct aw_sessions;

struct aw_service {
    struct aw_bedrock *bedrock;
    struct aw_tools *tools;
    struct aw_sessions *sessions;
    int max_iterations;
};

/* Registers Invoke on |srv| (InvokeStream answers UNIMPLEMENTED until the
 * streaming work lands). |svc| must outlive the server. */
int aw_service_register(struct cm_rpc_server *srv, struct aw_service *svc);

#endif
