/**
 * Keeps a page's data current without the user asking: after live events, and every few seconds
 * for what the server does not push. Every request slides the session, and an unattended tab must
 * not keep its session alive (see live.ts), so nothing loads while the user is away or the tab is
 * hidden; what was missed then loads as soon as they are back. At most one load runs at a time:
 * requests during a load are folded into one more load after it.
 */
import { isAbort } from "./api.ts";
import { h, replace, type Child } from "./dom.ts";
import { describeError } from "./forms.ts";
import type { PageContext } from "./pages.ts";

/** Signs of the user. Not element focus: a re-render moves the focus itself (replaceKeepingFocus). */
const ACTIVITY_EVENTS = ["pointerdown", "keydown", "wheel"] as const;
/** Without input for this long the user counts as away (capped by half the session's idle time). */
const AWAY_AFTER_SECONDS = 120;

export interface Refresher {
  /** Loads now, or after the load under way; while the user is away, when they are back. */
  request(): void;
  /** Stops the timer and the listeners (also done when the page is left). */
  stop(): void;
}

/** Runs `load` (which shows its own errors) on request and every `everyMs` while the user is around. */
export function keepFresh(ctx: PageContext, load: () => Promise<void>, options: { everyMs?: number } = {}): Refresher {
  const awayAfter = Math.min(AWAY_AFTER_SECONDS, ctx.user.idleSeconds / 2) * 1000;
  let lastActivity = Date.now();
  let running = false;
  let again = false;
  let missed = false;
  let stopped = false;

  const present = () => document.visibilityState === "visible" && Date.now() - lastActivity < awayAfter;
  const run = async (): Promise<void> => {
    if (stopped || ctx.signal.aborted) return;
    if (!present()) {
      missed = true;
      return;
    }
    if (running) {
      again = true;
      return;
    }
    running = true;
    missed = false;
    try {
      await load();
    } catch {
      // `load` shows its failures; an abort means the page is gone.
    } finally {
      running = false;
    }
    if (again) {
      again = false;
      await run();
    }
  };
  const userActive = () => {
    lastActivity = Date.now();
    if (missed) void run();
  };
  // Coming back to the tab (visible again, or the window focused) counts as being around.
  const back = (event: Event) => {
    if (event.type === "focus" && event.target !== window) return;
    if (document.visibilityState === "visible") userActive();
  };

  const timer = options.everyMs ? setInterval(() => void run(), options.everyMs) : null;
  for (const type of ACTIVITY_EVENTS) window.addEventListener(type, userActive, { capture: true, passive: true });
  document.addEventListener("visibilitychange", back);
  window.addEventListener("focus", back);
  const stop = () => {
    stopped = true;
    if (timer !== null) clearInterval(timer);
    for (const type of ACTIVITY_EVENTS) window.removeEventListener(type, userActive, { capture: true });
    document.removeEventListener("visibilitychange", back);
    window.removeEventListener("focus", back);
  };
  ctx.signal.addEventListener("abort", stop, { once: true });
  return { request: () => void run(), stop };
}

/**
 * Replaces what `target` shows, keeping the keyboard focus on the control with the same
 * `data-focus` in the new content, so that a live update does not throw the user out of a list.
 * When that control is gone the focus goes to `fallback` (the page by default).
 */
export function replaceKeepingFocus(target: HTMLElement, children: Child[], fallback?: HTMLElement): void {
  const active = document.activeElement;
  const hadFocus = active instanceof HTMLElement && target.contains(active);
  const key = hadFocus ? active.dataset.focus : undefined;
  replace(target, ...children);
  if (!hadFocus) return;
  const same = key ? target.querySelector<HTMLElement>(`[data-focus="${CSS.escape(key)}"]`) : null;
  (same ?? fallback ?? document.getElementById("page"))?.focus();
}

/**
 * keepFresh for a page's listing: a load that fails (other than by leaving the page) shows why in
 * place of the listing; `onFailure` lets the page forget what it last drew.
 */
export function keepListingFresh(
  ctx: PageContext,
  listing: HTMLElement,
  what: string,
  load: () => Promise<void>,
  options: { everyMs?: number; onFailure?: () => void } = {},
): Refresher {
  return keepFresh(
    ctx,
    async () => {
      try {
        await load();
      } catch (error) {
        if (ctx.signal.aborted || isAbort(error)) return;
        listing.removeAttribute("aria-busy");
        options.onFailure?.();
        replaceKeepingFocus(listing, [
          h("div", { class: "callout callout-error", role: "alert" }, h("p", {}, `${what} could not be loaded. ${describeError(error)}`)),
        ]);
      }
    },
    options.everyMs === undefined ? {} : { everyMs: options.everyMs },
  );
}
