/**
 * The panel's frame: the sign-in view, the signed-in layout (header with the theme choice,
 * navigation that is a menu on narrow screens, page area), hash routing to the registered pages,
 * the warning before an idle session ends, and the end of a session from any cause (sign-out, a
 * 401 from the API, the live socket closing with 4001, or the idle timeout passing).
 */
import { api, ApiError, boundApi, configureApi, isAbort, setCsrfToken } from "./api.ts";
import { closeAllDialogs, openFormDialog } from "./dialog.ts";
import { badge, h, plural, replace } from "./dom.ts";
import { describeError } from "./forms.ts";
import { Live, type LiveStatus } from "./live.ts";
import type { LoginReply, SessionInfo } from "./model.ts";
import { findPage, mayOpen, visiblePages, type Page, type PageContext, type SignedInUser } from "./pages.ts";
import { setThemeChoice, THEME_CHOICES, themeChoice, type ThemeChoice } from "./theme.ts";

const PRODUCT = "latchkey";
const SESSION_ENDED = "Your session has ended; sign in again.";
const THEME_LABELS: Record<ThemeChoice, string> = { system: "System theme", light: "Light theme", dark: "Dark theme" };

/** How long before an idle session ends the panel offers to keep it: a minute, or half of a shorter idle limit. */
function warningLeadSeconds(idleSeconds: number): number {
  return Math.min(60, Math.floor(idleSeconds / 2));
}

interface Route {
  id: string;
  params: URLSearchParams;
}

/** `#/audit?actor=admin` → {id: "audit", params: actor=admin} */
function currentRoute(): Route {
  const hash = location.hash.replace(/^#\/?/, "");
  const q = hash.indexOf("?");
  const path = (q === -1 ? hash : hash.slice(0, q)).replace(/\/+$/, "");
  let id = path;
  try {
    id = decodeURIComponent(path);
  } catch {
    // A malformed escape is just an unknown page.
  }
  return { id, params: new URLSearchParams(q === -1 ? "" : hash.slice(q + 1)) };
}

const liveLabels: Record<LiveStatus, { text: string; title: string }> = {
  connecting: { text: "Connecting…", title: "Opening the live-update connection" },
  live: { text: "Live", title: "Changes on the server appear here as they happen" },
  paused: { text: "Paused", title: "Live updates resume when you use the panel again" },
  offline: { text: "Offline", title: "The live-update connection dropped; reconnecting" },
};

interface Layout {
  nav: HTMLElement;
  main: HTMLElement;
  live: HTMLElement;
  toast: HTMLElement;
  /** Closes the navigation menu (narrow screens). */
  closeMenu(): void;
  /** Removes the layout's document-wide listeners. */
  abort: AbortController;
}

export class Shell {
  private user: SignedInUser | null = null;
  private layout: Layout | null = null;
  private pageAbort: AbortController | null = null;
  private expiryTimer: ReturnType<typeof setTimeout> | null = null;
  private warningTimer: ReturnType<typeof setTimeout> | null = null;
  private warning: HTMLDialogElement | null = null;
  private toastTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly live = new Live({
    sessionEnded: () => this.sessionEnded(),
    stillSignedIn: async () => {
      try {
        await api.get<SessionInfo>("/api/auth/session");
        return true;
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) return false;
        throw error;
      }
    },
    status: (status) => this.showLiveStatus(status),
  });

  constructor(private readonly root: HTMLElement) {}

  async start(): Promise<void> {
    configureApi({ unauthorized: () => this.sessionEnded(), used: () => this.sessionUsed() });
    window.addEventListener("hashchange", () => {
      if (this.user) this.renderRoute(true);
    });
    replace(this.root, h("p", { class: "loading" }, "Loading…"));
    try {
      this.signedIn(await api.get<SessionInfo>("/api/auth/session", {}, { anonymous: true }));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.showSignIn();
      else this.showSignIn({ error: describeError(error) });
    }
  }

  // ---- signing in and out ----

  private showSignIn(options: { notice?: string; error?: string; username?: string } = {}): void {
    document.title = `Sign in · ${PRODUCT}`;
    const errorBox = h("p", { class: "form-error", role: "alert", hidden: !options.error }, options.error ?? "");
    const username = h("input", {
      id: "signin-username",
      name: "username",
      autocomplete: "username",
      autocapitalize: "none",
      spellcheck: "false",
      required: true,
      maxlength: 64,
      value: options.username,
    });
    const password = h("input", {
      id: "signin-password",
      name: "password",
      type: "password",
      autocomplete: "current-password",
      required: true,
      maxlength: 1024,
    });
    const button = h("button", { type: "submit", class: "primary wide" }, "Sign in");
    const form = h(
      "form",
      { class: "signin-card", "aria-labelledby": "signin-title" },
      h("h1", { id: "signin-title", class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), PRODUCT),
      h("p", { class: "muted" }, "Sign in to the admin panel."),
      options.notice ? h("p", { class: "notice", role: "status" }, options.notice) : null,
      errorBox,
      h("div", { class: "field" }, h("label", { for: "signin-username" }, "Username"), username),
      h("div", { class: "field" }, h("label", { for: "signin-password" }, "Password"), password),
      button,
    );
    replace(this.root, h("main", { class: "signin" }, form));
    (options.username ? password : username).focus();

    let blockedUntil = 0;
    const setBusy = (busy: boolean, label = "Sign in") => {
      button.setAttribute("aria-disabled", String(busy));
      button.textContent = label;
    };
    /** Counts down a throttling wait on the button (the alert above says it once). */
    const countDown = () => {
      const left = Math.ceil((blockedUntil - Date.now()) / 1000);
      if (!form.isConnected) return;
      if (left <= 0) {
        blockedUntil = 0;
        setBusy(false);
        return;
      }
      setBusy(true, `Sign in (wait ${left} s)`);
      setTimeout(countDown, 1000);
    };

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (button.getAttribute("aria-disabled") === "true") return;
      errorBox.hidden = true;
      setBusy(true, "Signing in…");
      try {
        const reply = await api.post<LoginReply>(
          "/api/auth/login",
          { username: username.value.trim(), password: password.value, cookie: true },
          { anonymous: true },
        );
        setCsrfToken(reply.csrf_token ?? null);
        this.signedIn(await api.get<SessionInfo>("/api/auth/session", {}, { anonymous: true }));
      } catch (error) {
        setBusy(false);
        errorBox.textContent = describeError(error);
        errorBox.hidden = false;
        if (error instanceof ApiError && error.status === 429 && error.retryAfter) {
          blockedUntil = Date.now() + error.retryAfter * 1000;
          countDown();
        }
        if (error instanceof ApiError && error.field === "username") username.focus();
        else {
          password.value = "";
          password.focus();
        }
      }
    });
  }

  private signedIn(info: SessionInfo): void {
    setCsrfToken(info.csrf_token ?? null);
    this.user = { username: info.username, role: info.role, groups: info.allowed_groups, idleSeconds: info.expires_in };
    this.layout = this.buildLayout(this.user);
    this.live.start();
    this.sessionUsed();
    this.renderRoute(true);
  }

  private async signOut(): Promise<void> {
    // Stop the socket first: the server closes it with 4001 when the session ends.
    this.live.stop();
    try {
      await api.post("/api/auth/logout", {}, { anonymous: true });
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        this.announce(`Sign-out failed. ${describeError(error)}`, "error");
        this.live.start();
        return;
      }
    }
    this.teardown();
    history.replaceState(null, "", "#/");
    this.showSignIn({ notice: "You have signed out." });
  }

  /** Any sign that the session is gone: back to sign-in, keeping the route for afterwards. */
  private sessionEnded(): void {
    if (!this.user) return;
    const username = this.user.username;
    this.teardown();
    this.showSignIn({ notice: SESSION_ENDED, username });
  }

  private teardown(): void {
    this.user = null;
    this.layout?.abort.abort();
    this.layout = null;
    this.live.stop();
    this.leavePage();
    this.clearSessionTimers();
    closeAllDialogs();
    setCsrfToken(null);
  }

  private clearSessionTimers(): void {
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    if (this.warningTimer !== null) clearTimeout(this.warningTimer);
    this.expiryTimer = this.warningTimer = null;
    const warning = this.warning;
    this.warning = null;
    warning?.close();
  }

  /**
   * The session slides with each request; when none has been made for its idle time it has
   * ended on the server, so look once then instead of waiting for the user's next click. Shortly
   * before, the panel offers to keep it.
   */
  private sessionUsed(): void {
    this.live.wake();
    this.clearSessionTimers();
    if (!this.user) return;
    const idle = this.user.idleSeconds;
    const endsAt = Date.now() + idle * 1000;
    this.warningTimer = setTimeout(
      () => {
        this.warningTimer = null;
        this.warnOfIdleEnd(endsAt);
      },
      (idle - warningLeadSeconds(idle)) * 1000,
    );
    this.expiryTimer = setTimeout(
      () => {
        this.expiryTimer = null;
        api.get<SessionInfo>("/api/auth/session").catch((error: unknown) => {
          if (!(error instanceof ApiError && error.status === 401)) this.sessionUsed();
        });
      },
      (idle + 2) * 1000,
    );
  }

  /**
   * "Stay signed in" makes a request, which slides the session (and closes this dialog through
   * sessionUsed); left alone, the session ends at `endsAt` and the expiry check signs out.
   */
  private warnOfIdleEnd(endsAt: number): void {
    if (!this.user || this.warning) return;
    const left = h("strong", {});
    const count = () => {
      const seconds = Math.ceil((endsAt - Date.now()) / 1000);
      left.textContent = seconds > 0 ? `in ${plural(seconds, "second")}` : "now";
    };
    count();
    const ticker = setInterval(count, 1000);
    const dialog = openFormDialog({
      title: "Your session is about to end",
      intro: h("p", {}, "You have not used the panel for a while. For safety you will be signed out ", left, "."),
      submitLabel: "Stay signed in",
      busyLabel: "Staying signed in…",
      cancelLabel: "Sign out",
      onCancel: () => void this.signOut(),
      submit: async () => {
        await api.get<SessionInfo>("/api/auth/session");
      },
    });
    dialog.addEventListener("close", () => {
      clearInterval(ticker);
      if (this.warning === dialog) this.warning = null;
    });
    this.warning = dialog;
    dialog.querySelector<HTMLButtonElement>("button[type=submit]")?.focus();
  }

  // ---- layout and routing ----

  private buildLayout(user: SignedInUser): Layout {
    const abort = new AbortController();
    const nav = h(
      "nav",
      { id: "main-nav", class: "nav", "aria-label": "Main" },
      h("ul", {}, ...visiblePages(user).map((page) => h("li", {}, h("a", { href: `#/${page.id}`, "data-page": page.id }, page.title)))),
    );
    const main = h("main", { id: "page", class: "page", tabindex: "-1" });
    const live = h("span", { class: "live" });
    const toast = h("div", { class: "toast", role: "status", "aria-live": "polite" });

    // On narrow screens (app.css) the navigation is a menu behind this disclosure button.
    const menuButton = h(
      "button",
      { type: "button", class: "secondary menu-button", "aria-expanded": "false", "aria-controls": "main-nav" },
      h("span", { class: "menu-icon", "aria-hidden": "true" }),
      "Menu",
    );
    const setMenu = (open: boolean) => {
      menuButton.setAttribute("aria-expanded", String(open));
      nav.classList.toggle("nav-open", open);
    };
    const menuOpen = () => menuButton.getAttribute("aria-expanded") === "true";
    menuButton.addEventListener("click", () => setMenu(!menuOpen()));
    const escape = (event: KeyboardEvent) => {
      if (event.key !== "Escape" || !menuOpen()) return;
      event.preventDefault();
      setMenu(false);
      menuButton.focus();
    };
    menuButton.addEventListener("keydown", escape);
    nav.addEventListener("keydown", escape);
    document.addEventListener(
      "pointerdown",
      (event) => {
        if (menuOpen() && event.target instanceof Node && !nav.contains(event.target) && !menuButton.contains(event.target)) setMenu(false);
      },
      { signal: abort.signal },
    );

    const themeSelect = h(
      "select",
      { id: "theme-choice", class: "theme-select" },
      ...THEME_CHOICES.map((choice) => h("option", { value: choice, selected: choice === themeChoice() }, THEME_LABELS[choice])),
    );
    themeSelect.addEventListener("change", () => setThemeChoice(themeSelect.value as ThemeChoice));
    // A choice made in another tab (theme.ts applies it).
    window.addEventListener("storage", () => (themeSelect.value = themeChoice()), { signal: abort.signal });

    const header = h(
      "header",
      { class: "topbar" },
      h("a", { class: "brand", href: "#/" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), PRODUCT),
      menuButton,
      live,
      h(
        "span",
        { class: "who" },
        h("span", { class: "visually-hidden" }, "Signed in as "),
        h("span", { class: "who-name" }, user.username),
        badge(user.role, user.role),
      ),
      h("span", { class: "theme" }, h("label", { for: "theme-choice", class: "visually-hidden" }, "Theme"), themeSelect),
      h("button", { type: "button", class: "secondary sign-out", onclick: () => void this.signOut() }, "Sign out"),
    );
    replace(this.root, header, h("div", { class: "frame" }, nav, main), toast);
    return { nav, main, live, toast, closeMenu: () => setMenu(false), abort };
  }

  private showLiveStatus(status: LiveStatus): void {
    const element = this.layout?.live;
    if (!element) return;
    element.className = `live live-${status}`;
    element.textContent = liveLabels[status].text;
    element.title = liveLabels[status].title;
  }

  private leavePage(): void {
    this.pageAbort?.abort();
    this.pageAbort = null;
  }

  private renderRoute(moveFocus: boolean): void {
    const user = this.user;
    const layout = this.layout;
    if (!user || !layout) return;
    this.leavePage();
    layout.closeMenu();
    const route = currentRoute();
    const page = route.id === "" ? visiblePages(user)[0] : findPage(route.id);
    for (const link of layout.nav.querySelectorAll<HTMLAnchorElement>("a[data-page]")) {
      if (page && link.dataset.page === page.id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const abort = new AbortController();
    this.pageAbort = abort;
    const container = h("div", { class: "page-body" });
    replace(layout.main, container);
    if (moveFocus) layout.main.focus();

    if (!page) {
      document.title = `Not found · ${PRODUCT}`;
      replace(container, ...notice("No such page", `There is no page at #/${route.id}.`));
      return;
    }
    document.title = `${page.title} · ${PRODUCT}`;
    if (!mayOpen(page, user)) {
      replace(container, ...refusal(page, user));
      return;
    }
    const ctx: PageContext = {
      user,
      api: boundApi(abort.signal),
      signal: abort.signal,
      params: route.params,
      setParams: (params) => {
        const query = new URLSearchParams();
        for (const [key, value] of Object.entries(params))
          if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
        const text = query.toString();
        history.replaceState(null, "", `#/${page.id}${text ? `?${text}` : ""}`);
      },
      subscribe: (topic, handler) => {
        const off = this.live.subscribe(topic, handler);
        abort.signal.addEventListener("abort", off, { once: true });
      },
      announce: (message, kind) => this.announce(message, kind),
    };
    const failed = (error: unknown) => {
      if (abort.signal.aborted || isAbort(error)) return;
      if (error instanceof ApiError && error.status === 403) replace(container, ...refusal(page, user));
      else {
        replace(
          container,
          h("h1", {}, page.title),
          h(
            "div",
            { class: "callout callout-error", role: "alert" },
            h("p", {}, `This page could not be loaded. ${describeError(error)}`),
            h("button", { type: "button", class: "secondary", onclick: () => this.renderRoute(true) }, "Try again"),
          ),
        );
      }
    };
    try {
      const rendering = page.render(container, ctx);
      if (rendering) rendering.catch(failed);
    } catch (error) {
      failed(error);
    }
  }

  private announce(message: string, kind: "success" | "error" = "success"): void {
    const toast = this.layout?.toast;
    if (!toast) return;
    toast.textContent = message;
    toast.className = `toast toast-visible toast-${kind}`;
    if (this.toastTimer !== null) clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(
      () => {
        toast.className = "toast";
        toast.textContent = "";
      },
      kind === "error" ? 10_000 : 5000,
    );
  }
}

function notice(title: string, text: string): HTMLElement[] {
  return [h("h1", {}, title), h("p", {}, text), h("p", {}, h("a", { href: "#/" }, "Go to the dashboard"))];
}

function refusal(page: Page, user: SignedInUser): HTMLElement[] {
  const roles = page.roles.map((r) => `${r}s`).join(" and ");
  return [
    h("h1", {}, "You do not have access to this page"),
    h(
      "div",
      { class: "callout", role: "alert" },
      h("p", {}, `The ${page.title} page is for ${roles} only. You are signed in as ${user.username} with the ${user.role} role.`),
      h("p", {}, "Ask an administrator if you need access."),
    ),
    h("p", {}, h("a", { href: "#/" }, "Go to the dashboard")),
  ];
}
