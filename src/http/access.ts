/**
 * Who may call each REST route, as data. A route that is not listed here is refused for
 * everybody, so a new route stays closed until someone decides who may use it.
 *
 * - public: anybody, no session (login, health, docs, the panel's static files);
 * - session: any signed-in user;
 * - viewer / admin: at least that role;
 * - rpc: the RPC registry decides per call (the REST mirror and the WebSocket).
 */
export type Access = "public" | "session" | "viewer" | "admin" | "rpc";

export const routeAccess: Readonly<Record<string, Access>> = {
  "GET /": "public",
  "GET /panel/*": "public",
  "GET /healthz": "public",
  "GET /metrics": "public",
  "GET /openapi/json": "public",
  "GET /swagger/json": "public",
  "GET /swagger": "public",
  "GET /swagger/*": "public",
  "POST /api/auth/login": "public",
  "POST /api/auth/scram/start": "public",
  "POST /api/auth/scram/finish": "public",
  "POST /api/auth/challenge": "public",
  "POST /api/auth/logout": "session",
  "GET /api/auth/session": "session",
  "GET /api/users": "admin",
  "POST /api/users": "admin",
  "GET /api/users/:username": "admin",
  "PATCH /api/users/:username": "admin",
  "DELETE /api/users/:username": "admin",
  "GET /api/audit": "admin",
  "POST /api/activate": "public",
  "GET /api/check": "public",
  "POST /api/deactivate": "public",
  "GET /api/license/public-key": "public",
  "GET /api/apps": "viewer",
  "POST /api/apps": "admin",
  "GET /api/apps/:id": "viewer",
  "PATCH /api/apps/:id": "admin",
  "DELETE /api/apps/:id": "admin",
  "GET /api/licenses": "viewer",
  "POST /api/licenses": "admin",
  "GET /api/licenses/:id": "viewer",
  "PATCH /api/licenses/:id": "admin",
  "DELETE /api/licenses/:id": "admin",
  "GET /api/licenses/:id/activations": "viewer",
  "DELETE /api/licenses/:id/activations/:hwid": "admin",
  "GET /api/settings": "viewer",
  "PATCH /api/settings": "admin",
  "GET /api/keys": "viewer",
  "POST /api/keys": "admin",
  "GET /api/keys/:id": "viewer",
  "POST /api/keys/:id/revoke": "admin",
  "POST /api/keys/:id/reset": "admin",
  "DELETE /api/keys/:id": "admin",
  "GET /api/keys/:id/install-command": "admin",
  "GET /api/clients": "viewer",
  "GET /api/clients/:uuid": "viewer",
  "DELETE /api/clients/:uuid": "admin",
  "GET /ws": "rpc",
  "PUT /:namespace/:name": "rpc",
};
