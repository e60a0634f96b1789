/**
 * An in-process publish/subscribe hub. The WebSocket layer listens here to close connections
 * whose sessions end and to push `events/<topic>` messages to the admin panel.
 */

import type { Actor } from "./accounts.ts";
import type { ThrottleNews } from "./shared-throttle.ts";

/**
 * What signed-in admin/viewer connections are told, by topic (`{"namespace":"events","name":
 * topic,"args":...}`). The panel subscribes with these same types.
 */
export interface PushTopics {
  /** A client registered (or reconnected). */
  "clients.online": { uuid: string; name: string; group: string | null };
  "clients.offline": { uuid: string };
  "clients.deleted": { uuid: string };
  "keys.changed": { ids: number[]; change: "generated" | "bound" | "revoked" | "reset" | "deleted" };
  "settings.changed": { require_auth_key: boolean };
  /** A machine activated a key (again, when `new_seat` is false); `remaining` -1 = unlimited. */
  "licenses.activated": { id: number; hwid: string; machine: string | null; new_seat: boolean; remaining: number };
  /** `hwid`: the machine whose activation was removed (`deactivated`). */
  "licenses.changed": { id: number; change: "created" | "updated" | "deleted" | "deactivated"; hwid?: string };
  /** Certificates the CA issued or revoked (`hostname` when they belong to one host). */
  "certificates.changed": { serials: string[]; change: "issued" | "revoked"; hostname?: string };
  /**
   * A host was registered or removed, or it reported (`reported` at most once per host every
   * 10 s, however often it reports: enough for a live panel, never a flood).
   */
  "hosts.changed": { hostname: string; change: "registered" | "removed" | "reported" };
}

export type PushTopic = keyof PushTopics;

/** One push: a topic with its args, for the connections of these client groups (all, when absent). */
export type Push = { [K in PushTopic]: { topic: K; args: PushTopics[K]; groups?: string[] } }[PushTopic];

export interface EventMap {
  /** An account's password or role changed, or it was deleted: logins in flight for it are void. */
  "credentials.changed": { username: string };
  /** Sessions that no longer exist; their WebSockets must close. */
  "sessions.revoked": { sessionIds: string[]; reason: string };
  /** Clients that lost the right to be connected (key revoked/reset/deleted, client deleted). */
  "clients.kick": { uuids: string[]; reason: string; keyId?: number; actor?: Actor };
  /** Certificates that no longer give access: connections authenticated by them must close. */
  "certificates.revoked": { serials: string[] };
  /** A licensing throttle's bucket past its free failures: the other nodes must hear of it (shared-throttle.ts). */
  "throttles.crossed": ThrottleNews;
  /** A change an authenticated admin/viewer connection may be told about. */
  push: Push;
}

type Listener<T> = (payload: T) => void;

export class EventHub {
  private readonly listeners = new Map<keyof EventMap, Set<Listener<never>>>();

  on<K extends keyof EventMap>(topic: K, listener: Listener<EventMap[K]>): () => void {
    let set = this.listeners.get(topic);
    if (!set) this.listeners.set(topic, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
  }

  emit<K extends keyof EventMap>(topic: K, payload: EventMap[K]): void {
    for (const listener of this.listeners.get(topic) ?? []) (listener as Listener<EventMap[K]>)(payload);
  }
}
