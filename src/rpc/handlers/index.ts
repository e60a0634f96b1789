/** Every RPC the server answers, in one visible list. */
import { Registry } from "../registry.ts";
import { auditHandler } from "./audit.ts";
import { authHandlers, queryHandler } from "./auth.ts";
import { clientsHandler, heartbeatHandler, keysHandler, registerHandler, settingsHandler } from "./enrollment.ts";
import { certsHandler, hostsHandler } from "./hosts.ts";
import { licensesHandler } from "./licenses.ts";
import { usersHandler } from "./users.ts";

export function createRegistry(): Registry {
  const registry: Registry = new Registry([
    ...authHandlers,
    queryHandler(() => registry),
    usersHandler,
    auditHandler,
    licensesHandler,
    keysHandler,
    settingsHandler,
    clientsHandler,
    hostsHandler,
    certsHandler,
    registerHandler,
    heartbeatHandler,
  ]);
  return registry;
}
