/**
 * An in-process publish/subscribe hub. The WebSocket layer listens here to close connections
 * whose sessions end and to push `events/<topic>` messages to the admin panel.
 */
export interface EventMap {
  /** An account's password or role changed, or it was deleted: logins in flight for it are void. */
  "credentials.changed": { username: string };
  /** Sessions that no longer exist; their WebSockets must close. */
  "sessions.revoked": { sessionIds: string[]; reason: string };
  /** Clients that lost the right to be connected (key revoked/reset/deleted, client deleted). */
  "clients.kick": { uuids: string[]; reason: string; keyId?: number };
  /** A change an authenticated admin/viewer connection may be told about. */
  push: { topic: string; args: Record<string, unknown>; groups?: string[] };
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
