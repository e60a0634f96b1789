/** Applications: the products license keys belong to, each with the support message its failures carry. */
import type { AppRow, LicenseStore } from "../../db/licenses.ts";
import type { Sql } from "../../db/sql.ts";
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

export async function requireApp(store: LicenseStore, id: number): Promise<AppRow> {
  const app = await store.app(id);
  if (!app) throw notFound(`no application with id ${id}`);
  return app;
}

function appView(a: AppRow): AppView {
  return { id: a.id, name: a.name, support_message: a.support_message, created_at: isoTime(a.created_at) };
}

export class Apps {
  constructor(
    private readonly sql: Sql,
    private readonly store: LicenseStore,
    private readonly audit: Audit,
    private readonly clock: Clock,
    /** Holds each application's failed-check outcomes, with its support message. */
    private readonly checks: CheckCache,
  ) {}

  async create(actor: Actor, input: { name: string; supportMessage: string }): Promise<AppView> {
    const id = await this.store.insertApp(input.name, input.supportMessage, this.clock());
    if (id === null) {
      const taken = (await this.store.appByName(input.name))?.name ?? input.name;
      throw conflict(`an application named ${JSON.stringify(taken)} already exists`, "name");
    }
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "app.create",
      target: `app ${id}`,
      outcome: "success",
      reason: input.name,
    });
    return appView(await requireApp(this.store, id));
  }

  async list(limit: number, offset: number): Promise<{ items: AppView[]; total: number }> {
    const [apps, total] = await Promise.all([this.store.apps(limit, offset), this.store.countApps()]);
    return { items: apps.map((a) => ({ ...appView(a), licenses: a.licenses })), total };
  }

  async get(id: number): Promise<AppView> {
    return appView(await requireApp(this.store, id));
  }

  async update(actor: Actor, id: number, changes: { name?: string | undefined; supportMessage?: string | undefined }): Promise<AppView> {
    await requireApp(this.store, id);
    if (!(await this.store.updateApp(id, changes)))
      throw conflict(`an application named ${JSON.stringify(changes.name)} already exists`, "name");
    this.checks.forgetApps();
    await this.audit.record({ actor: actor.name, address: actor.address, action: "app.update", target: `app ${id}`, outcome: "success" });
    return appView(await requireApp(this.store, id));
  }

  async delete(actor: Actor, id: number): Promise<void> {
    await requireApp(this.store, id);
    // Counted and deleted in one transaction, with the application locked (PostgreSQL), so that a
    // key cut meanwhile, by another process or another request, cannot slip in.
    await this.sql.transaction(async () => {
      await this.store.lockApp(id);
      const keys = await this.store.licensesOfApp(id);
      if (keys > 0) throw conflict(`application ${id} still has ${keys} license key${keys === 1 ? "" : "s"}; delete them first`, "id");
      await this.store.deleteApp(id);
    });
    this.checks.forgetApps();
    await this.audit.record({ actor: actor.name, address: actor.address, action: "app.delete", target: `app ${id}`, outcome: "success" });
  }
}
