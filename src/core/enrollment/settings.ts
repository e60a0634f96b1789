/** The `require_auth_key` setting: read afresh by every registration, so a change needs no restart. */
import { REQUIRE_AUTH_KEY, type SettingsStore } from "../../db/settings.ts";
import type { Actor } from "../accounts.ts";
import type { Audit } from "../audit.ts";
import type { EventHub } from "../events.ts";

export type EnrollmentSettingsView = { require_auth_key: boolean };

export class EnrollmentSettings {
  constructor(
    private readonly store: SettingsStore,
    private readonly audit: Audit,
    private readonly events: EventHub,
  ) {}

  async requireAuthKey(): Promise<boolean> {
    return (await this.store.get<boolean>(REQUIRE_AUTH_KEY)) ?? false;
  }

  async get(): Promise<EnrollmentSettingsView> {
    return { require_auth_key: await this.requireAuthKey() };
  }

  async update(actor: Actor, changes: { require_auth_key?: boolean | undefined }): Promise<EnrollmentSettingsView> {
    if (changes.require_auth_key !== undefined) {
      await this.store.set(REQUIRE_AUTH_KEY, changes.require_auth_key);
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "settings.update",
        target: "require_auth_key",
        outcome: "success",
        reason: String(changes.require_auth_key),
      });
      this.events.emit("push", { topic: "settings.changed", args: await this.get() });
    }
    return this.get();
  }
}
