/**
 * Live updates over the same-origin `/ws` socket, which the session cookie authenticates.
 * The server pushes `{"namespace":"events","name":"<topic>","args":{...}}`; pages subscribe by
 * topic. A close with CLOSE_SESSION_ENDED means the session ended. After the server's idle close
 * (CLOSE_IDLE) the socket reopens only on the next sign of the user, because opening it counts as
 * session use and an unattended tab must not keep its session alive.
 */
import type { PushTopic, PushTopics } from "../../src/core/events.ts";
import { CLOSE_IDLE, CLOSE_SESSION_ENDED } from "../../src/rpc/protocol-codes.ts";

/** A page's handler of one topic, given that topic's args as the server types them. */
export type EventHandler<K extends PushTopic> = (args: PushTopics[K]) => void;
export type LiveStatus = "connecting" | "live" | "paused" | "offline";

const ACTIVITY_EVENTS = ["pointerdown", "keydown", "focus"] as const;

export interface LiveHooks {
  /** The server ended the session (logout elsewhere, user deleted, password changed). */
  sessionEnded(): void;
  /** Before reconnecting: false when the session is gone, throws when the server is unreachable. */
  stillSignedIn(): Promise<boolean>;
  status(status: LiveStatus): void;
}

export class Live {
  private socket: WebSocket | null = null;
  private readonly handlers = new Map<string, Set<(args: never) => void>>();
  private running = false;
  private failures = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnecting = false;
  private readonly resume = () => this.wake();

  constructor(private readonly hooks: LiveHooks) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.failures = 0;
    this.open();
  }

  /** Closes the socket for good (sign-out, session end); subscriptions stay for the next start. */
  stop(): void {
    this.running = false;
    this.cancelRetry();
    this.stopWatchingActivity();
    const socket = this.socket;
    this.socket = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, "signed out");
  }

  /** Calls `handler` for every event of `topic`; returns the unsubscribe function. */
  subscribe<K extends PushTopic>(topic: K, handler: EventHandler<K>): () => void {
    let set = this.handlers.get(topic);
    if (!set) this.handlers.set(topic, (set = new Set()));
    set.add(handler as (args: never) => void);
    return () => {
      set.delete(handler as (args: never) => void);
      if (set.size === 0) this.handlers.delete(topic);
    };
  }

  private open(): void {
    this.hooks.status("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/ws`);
    this.socket = socket;
    socket.addEventListener("open", () => {
      if (this.socket !== socket) return;
      this.failures = 0;
      this.hooks.status("live");
    });
    socket.addEventListener("message", (event) => {
      if (this.socket === socket) this.dispatch(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (!this.running) return;
      if (event.code === CLOSE_SESSION_ENDED) {
        this.running = false;
        this.hooks.sessionEnded();
      } else if (event.code === CLOSE_IDLE) {
        this.hooks.status("paused");
        this.watchActivity();
      } else {
        this.hooks.status("offline");
        this.retryLater();
      }
    });
  }

  private dispatch(data: unknown): void {
    if (typeof data !== "string") return;
    let message: unknown;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    const { namespace, name, args } = (message ?? {}) as { namespace?: unknown; name?: unknown; args?: unknown };
    if (namespace !== "events" || typeof name !== "string") return;
    if (typeof args !== "object" || args === null) return;
    // The server sends each topic with its args' type (core/events.ts PushTopics).
    for (const handler of [...(this.handlers.get(name) ?? [])] as ((args: object) => void)[]) {
      try {
        handler(args);
      } catch (error) {
        console.error(`live event handler for ${name} failed`, error);
      }
    }
  }

  /** Reconnects with a growing delay (1 s … 30 s). */
  private retryLater(): void {
    this.cancelRetry();
    const delay = Math.min(30_000, 1000 * 2 ** this.failures);
    this.failures += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.reconnect();
    }, delay);
  }

  /**
   * Opens a new socket once the session is confirmed: an upgrade whose cookie has expired
   * would give a silent anonymous socket instead of an error.
   */
  private async reconnect(): Promise<void> {
    if (!this.running || this.socket !== null || this.reconnecting) return;
    this.reconnecting = true;
    let signedIn: boolean;
    try {
      signedIn = await this.hooks.stillSignedIn();
    } catch {
      this.reconnecting = false;
      if (this.running) this.retryLater();
      return;
    }
    this.reconnecting = false;
    // When the session is gone the API layer has already ended it here too.
    if (signedIn && this.running && this.socket === null) this.open();
  }

  private cancelRetry(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private watchActivity(): void {
    for (const type of ACTIVITY_EVENTS) window.addEventListener(type, this.resume, { capture: true });
  }

  private stopWatchingActivity(): void {
    for (const type of ACTIVITY_EVENTS) window.removeEventListener(type, this.resume, { capture: true });
  }

  /** The user is back after an idle close: reopen the socket. */
  wake(): void {
    if (!this.running || this.socket !== null || this.retryTimer !== null) return;
    this.stopWatchingActivity();
    void this.reconnect();
  }
}
