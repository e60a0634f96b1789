/**
 * The page registry. A page module calls `registerPage` once at load (main.ts imports it); the
 * shell builds the navigation from the pages the signed-in user's role may see, in registration
 * order, and routes `#/<id>?<params>` to `render`.
 */
import type { Api } from "./api.ts";
import type { PushTopic } from "../../src/core/events.ts";
import type { EventHandler } from "./live.ts";
import type { Role } from "./model.ts";

export interface SignedInUser {
  username: string;
  role: Role;
  /** Client groups a viewer may see; admins see all. */
  groups: string[];
  /** Seconds a session lasts without use. */
  idleSeconds: number;
}

export interface PageContext {
  readonly user: SignedInUser;
  /** API calls that are cancelled when the user leaves the page. */
  readonly api: Api;
  /** Aborted when the user leaves the page: stop timers and ignore late results. */
  readonly signal: AbortSignal;
  /** The route's query: `#/audit?actor=admin` gives `actor=admin`. */
  readonly params: URLSearchParams;
  /** Rewrites the route's query in place (no re-render), so that reloads and sign-ins keep it. */
  setParams(params: Record<string, string | number | null | undefined>): void;
  /** Live events of one topic while the page is shown. */
  subscribe<K extends PushTopic>(topic: K, handler: EventHandler<K>): void;
  /** A short status message for everyone, screen readers included ("User alice created."). */
  announce(message: string, kind?: "success" | "error"): void;
}

export interface Page {
  /** The route: `#/<id>`. Lowercase letters, digits and dashes. */
  id: string;
  /** The navigation label and the document title. */
  title: string;
  /** Roles that may see the page; the server enforces the same on its API. */
  roles: readonly Role[];
  /**
   * Fills `container` (empty, already in the document). A thrown or rejected error is shown in
   * its place: a 403 as the access refusal, anything else with a retry button.
   */
  render(container: HTMLElement, ctx: PageContext): void | Promise<void>;
}

const pages: Page[] = [];

export function registerPage(page: Page): void {
  if (!/^[a-z0-9-]+$/.test(page.id)) throw new Error(`page id ${JSON.stringify(page.id)} must be lowercase letters, digits and dashes`);
  if (pages.some((p) => p.id === page.id)) throw new Error(`page ${page.id} registered twice`);
  pages.push(page);
}

export function findPage(id: string): Page | undefined {
  return pages.find((p) => p.id === id);
}

export function mayOpen(page: Page, user: SignedInUser): boolean {
  return page.roles.includes(user.role);
}

/** The pages `user` may open, in navigation order. */
export function visiblePages(user: SignedInUser): Page[] {
  return pages.filter((p) => mayOpen(p, user));
}
