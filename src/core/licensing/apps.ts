/** Applications: the products license keys belong to, each with the support message its failures carry. */
import type { Database } from "bun:sqlite";
import { immediate } from "../../db/open.ts";
import type { AppRow, LicenseStore } from "../../db/licenses.ts";
import type { Actor } from "../accounts.ts";
import type { Audit } from "../audit.ts";
import type { Clock } from "../clock.ts";
import { conflict, notFound } from "../errors.ts";
import { isoTime } from "../fields.ts";
import type { CheckCache } from "./check-cache.ts";

export interface AppView {
  id: number;
  name: string;
  support_message: string;
  created_at: string;
  licenses?: number;
}

export function requireApp(store: LicenseStore, id: number): AppRow {
  const app = store.app(id);
  if (!app) throw notFound(`no application with id ${id}`);
  return app;
}

function appView(a: AppRow): AppView {
  return { id: a.id, name: a.name, support_message: a.support_message, created_at: isoTime(a.created_at) };
}

export class Apps {
  constructor(
    private readonly db: Database,
    private readonly store: LicenseStore,
    private readonly audit: Audit,
    private readonly clock: Clock,
    /** Holds each application's failed-check outcomes, with its support message. */
    private readonly checks: CheckCache,
  ) {}

  create(actor: Actor, input: { name: string; supportMessage: string }): AppView {
    const id = this.store.insertApp(input.name, input.supportMessage, this.clock());
    if (id === null)
      throw conflict(`an application named ${JSON.stringify(this.store.appByName(input.name)?.name ?? input.name)} already exists`, "name");
    this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "app.create",
      target: `app ${id}`,
      outcome: "success",
      reason: input.name,
    });
    return appView(requireApp(this.store, id));
  }

  list(limit: number, offset: number): { items: AppView[]; total: number } {
    return { items: this.store.apps(limit, offset).map((a) => ({ ...appView(a), licenses: a.licenses })), total: this.store.countApps() };
  }

  get(id: number): AppView {
    return appView(requireApp(this.store, id));
  }

  update(actor: Actor, id: number, changes: { name?: string | undefined; supportMessage?: string | undefined }): AppView {
    requireApp(this.store, id);
    if (!this.store.updateApp(id, changes)) throw conflict(`an application named ${JSON.stringify(changes.name)} already exists`, "name");
    this.checks.forgetApps();
    this.audit.record({ actor: actor.name, address: actor.address, action: "app.update", target: `app ${id}`, outcome: "success" });
    return appView(requireApp(this.store, id));
  }

  delete(actor: Actor, id: number): void {
    requireApp(this.store, id);
    // Counted and deleted in one transaction, so a key cut meanwhile by another process cannot slip in.
    immediate(this.db, () => {
      const keys = this.store.licensesOfApp(id);
      if (keys > 0) throw conflict(`application ${id} still has ${keys} license key${keys === 1 ? "" : "s"}; delete them first`, "id");
      this.store.deleteApp(id);
    });
    this.checks.forgetApps();
    this.audit.record({ actor: actor.name, address: actor.address, action: "app.delete", target: `app ${id}`, outcome: "success" });
  }
}
