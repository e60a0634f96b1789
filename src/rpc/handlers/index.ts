/** Every RPC the server answers, in one visible list. */
import { Registry } from "../registry.ts";
import { auditHandler } from "./audit.ts";
import { authHandlers, queryHandler } from "./auth.ts";
import { clientsHandler, csrHandler, heartbeatHandler, keysHandler, registerHandler, settingsHandler } from "./enrollment.ts";
import { certsHandler, hostsHandler } from "./hosts.ts";
import { licensesHandler } from "./licenses.ts";
import { sslSettingsHandler } from "./user-certificates.ts";
import { usersHandler } from "./users.ts";

export function createRegistry(): Registry {
  const registry: Registry = new Registry([
    ...authHandlers,
    queryHandler(() => registry),
    sslSettingsHandler,
    usersHandler,
    auditHandler,
    licensesHandler,
    keysHandler,
    settingsHandler,
    clientsHandler,
    hostsHandler,
    certsHandler,
    registerHandler,
    csrHandler,
    heartbeatHandler,
  ]);
  return registry;
}
