/**
 * Dashboard: who you are, the server, online clients and keys by state (live), for admins the
 * accounts and the latest activity, and charts of the last 24 hours, 7 or 30 days.
 */
import { isAbort } from "../api.ts";
import { counted, isRange, peak, RangeSwitch, rangePhrase, soon, sum, TimeChart } from "../charts.ts";
import { badge, emptyState, h, plural, replace, time, uniqueId, type Child } from "../dom.ts";
import { describeError } from "../forms.ts";
import type { AuditEntry, Client, Health, KeyList, KeyStatus, Paged, Settings, Stats, User } from "../model.ts";
import { registerPage, type PageContext } from "../pages.ts";
import { keepFresh } from "../refresh.ts";

function card(title: string, ...body: Child[]): { element: HTMLElement; body: HTMLElement } {
  const content = h("div", { class: "card-body" }, ...body);
  return { element: h("section", { class: "card", "aria-label": title }, h("h2", {}, title), content), body: content };
}

function facts(...pairs: [string, Child][]): HTMLElement {
  return h("dl", { class: "facts" }, ...pairs.flatMap(([term, detail]) => [h("dt", {}, term), h("dd", {}, detail)]));
}

/** Fills a card when its request settles, so that one slow or failing source spoils nothing else. */
async function fill<T>(target: HTMLElement, ctx: PageContext, load: () => Promise<T>, show: (value: T) => Child[]): Promise<void> {
  replace(target, h("p", { class: "muted" }, "Loading…"));
  try {
    const value = await load();
    if (!ctx.signal.aborted) replace(target, ...show(value));
  } catch (error) {
    if (!ctx.signal.aborted) replace(target, h("p", { class: "error-text" }, describeError(error)));
  }
}

const KEY_STATES: readonly KeyStatus[] = ["pending", "active", "revoked"];

/** Online clients and keys by state (of the viewer's groups), counted by the servers' totals. */
async function enrollmentCounts(ctx: PageContext) {
  const total = (query: Record<string, string>) => ctx.api.get<Paged<Client>>("/api/clients", { ...query, limit: 1 }).then((p) => p.total);
  const [online, clients, settings, keys] = await Promise.all([
    total({ status: "online" }),
    total({}),
    ctx.api.get<Settings>("/api/settings"),
    // One request: the list reports the keys of each state besides its page.
    ctx.api.get<KeyList>("/api/keys", { limit: 1 }),
  ]);
  return { online, clients, settings, keys: KEY_STATES.map((status) => [status, keys.by_status[status]] as const) };
}

/** The charts load again this often, and a few seconds after live events. */
const CHARTS_REFRESH_MS = 15_000;

const numbers = new Intl.NumberFormat();

/**
 * The charts of what happened over the chosen range (`?range=` keeps it): license checks and
 * activations, client registrations, refused sign-ins (admins), clients online and host reports.
 * Viewers see the clients and hosts of their groups, as on the other pages.
 */
function activity(ctx: PageContext): HTMLElement {
  const admin = ctx.user.role === "admin";
  const yours = admin ? "" : " in your groups";
  const param = ctx.params.get("range");
  const options = { signal: ctx.signal };
  const charts = {
    checks: new TimeChart("License checks", options),
    activations: new TimeChart("Activations", options),
    registrations: new TimeChart("Client registrations", options),
    logins: admin ? new TimeChart("Failed sign-ins", options) : null,
    online: new TimeChart("Clients online", options),
    reports: new TimeChart("Host reports", options),
  };
  const status = h("p", { class: "error-text", role: "alert", hidden: true });
  const grid = h("div", { class: "charts" }, ...Object.values(charts).map((chart) => chart?.element));
  const range = new RangeSwitch("Time range of the charts", isRange(param) ? param : "24h", (chosen) => {
    ctx.setParams({ range: chosen === "24h" ? null : chosen });
    refresher.request();
  });
  const headingId = uniqueId("activity");
  const section = h(
    "section",
    { class: "activity-charts", "aria-labelledby": headingId },
    h("div", { class: "charts-head" }, h("h2", { id: headingId }, "Activity over time"), range.element),
    status,
    grid,
  );

  const show = (stats: Stats) => {
    const s = stats.series;
    const when = rangePhrase(stats.range);
    const t = stats.timestamps;
    const failedChecks = sum(s.checks_failed);
    charts.checks.update(
      t,
      [
        { label: "Passed", color: "--accent", values: s.checks_ok ?? [], main: true },
        { label: "Failed", color: "--danger", values: s.checks_failed ?? [] },
      ],
      `${counted(sum(s.checks_ok) + failedChecks, "license check")}, ${numbers.format(failedChecks)} failed ${when}.`,
    );
    const failedActivations = sum(s.activations_failed);
    charts.activations.update(
      t,
      [
        { label: "Passed", color: "--success", values: s.activations_ok ?? [], main: true },
        { label: "Failed", color: "--danger", values: s.activations_failed ?? [] },
      ],
      `${counted(sum(s.activations_ok) + failedActivations, "activation")}, ${numbers.format(failedActivations)} failed ${when}.`,
    );
    const refused = sum(s.registrations_refused);
    charts.registrations.update(
      t,
      [
        { label: "Admitted", color: "--accent", values: s.registrations_ok ?? [], main: true },
        { label: "Refused", color: "--warning", values: s.registrations_refused ?? [] },
      ],
      `${counted(sum(s.registrations_ok) + refused, "registration")}, ${numbers.format(refused)} refused ${when}${yours}.`,
    );
    charts.logins?.update(
      t,
      [
        { label: "Failed", color: "--danger", values: s.logins_failed ?? [], main: true },
        { label: "Throttled", color: "--warning", values: s.logins_throttled ?? [] },
      ],
      `${counted(sum(s.logins_failed), "failed sign-in")} and ${numbers.format(sum(s.logins_throttled))} throttled ${when}.`,
    );
    charts.online.update(
      t,
      [{ label: "Online", color: "--accent", values: s.clients_online ?? [], main: true }],
      `At most ${counted(peak(s.clients_online), "client")} online at once ${when}${yours}.`,
    );
    charts.reports.update(
      t,
      [{ label: "Reports", color: "--success", values: s.host_reports ?? [], main: true }],
      `${counted(sum(s.host_reports), "host report")} ${when}${yours}.`,
    );
  };

  const refresher = keepFresh(
    ctx,
    async () => {
      const chosen = range.value;
      grid.setAttribute("aria-busy", "true");
      try {
        const stats = await ctx.api.get<Stats>("/api/stats", { range: chosen });
        if (ctx.signal.aborted || chosen !== range.value) return;
        status.hidden = true;
        show(stats);
      } catch (error) {
        if (ctx.signal.aborted || isAbort(error)) return;
        status.hidden = false;
        replace(status, `The charts could not be loaded. ${describeError(error)}`);
      } finally {
        grid.removeAttribute("aria-busy");
      }
    },
    { everyMs: CHARTS_REFRESH_MS },
  );
  const later = soon(() => refresher.request(), ctx.signal);
  for (const topic of ["licenses.activated", "clients.online", "clients.offline", "hosts.changed"] as const) ctx.subscribe(topic, later);
  refresher.request();
  return section;
}

function minutes(seconds: number): string {
  return seconds % 60 === 0 ? plural(seconds / 60, "minute") : plural(seconds, "second");
}

registerPage({
  id: "dashboard",
  title: "Dashboard",
  roles: ["admin", "viewer"],
  async render(container, ctx) {
    const { user } = ctx;
    const groups: Child =
      user.role === "admin"
        ? "All (admin)"
        : user.groups.length > 0
          ? h("span", { class: "chips" }, ...user.groups.map((g) => badge(g, "group")))
          : h("span", { class: "muted" }, "None yet: an admin can give you groups");
    const you = card(
      "You",
      facts(
        ["Username", user.username],
        ["Role", badge(user.role, user.role)],
        ["Client groups", groups],
        ["Session", `Ends after ${minutes(user.idleSeconds)} idle`],
      ),
    );
    const server = card("Server");
    const clients = card("Clients");
    const keys = card("Pre-shared keys");
    const cards = h("div", { class: "cards" }, you.element, server.element, clients.element, keys.element);
    replace(
      container,
      h("h1", {}, "Dashboard"),
      h("p", { class: "lead" }, `Welcome, ${user.username}. You are signed in with the ${user.role} role.`),
      cards,
    );
    container.append(activity(ctx));

    const jobs = [
      fill(
        server.body,
        ctx,
        // /healthz is public: it neither needs nor refreshes the session.
        () => ctx.api.get<Health>("/healthz", {}, { anonymous: true }),
        (health) => [
          facts(
            ["Version", h("code", {}, health.version)],
            ["Status", badge(health.status, health.status === "ok" ? "success" : "failure")],
            ["Database", health.database],
          ),
        ],
      ),
    ];

    // Presence and key states follow the live events; a failure shows in both cards.
    let first = true;
    const counts = keepFresh(ctx, async () => {
      if (first) for (const target of [clients.body, keys.body]) replace(target, h("p", { class: "muted" }, "Loading…"));
      first = false;
      try {
        const c = await enrollmentCounts(ctx);
        if (ctx.signal.aborted) return;
        replace(
          clients.body,
          h("p", { class: "stat" }, String(c.online), h("span", { class: "stat-label" }, " online")),
          h("p", { class: "muted" }, `of ${plural(c.clients, "enrolled client")}`),
          h("p", {}, h("a", { href: "#/clients" }, "Open the clients")),
        );
        replace(
          keys.body,
          h(
            "dl",
            { class: "facts" },
            ...c.keys.flatMap(([status, count]) => [h("dt", {}, badge(status, status)), h("dd", { class: "count" }, String(count))]),
            h("dt", {}, "Key required"),
            h("dd", {}, c.settings.require_auth_key ? "yes" : "no"),
          ),
          h("p", {}, h("a", { href: "#/keys" }, user.role === "admin" ? "Manage the keys" : "Open the keys")),
        );
      } catch (error) {
        if (ctx.signal.aborted) return;
        for (const target of [clients.body, keys.body]) replace(target, h("p", { class: "error-text" }, describeError(error)));
      }
    });
    for (const topic of ["clients.online", "clients.offline", "clients.deleted", "keys.changed", "settings.changed"] as const)
      ctx.subscribe(topic, () => counts.request());
    counts.request();

    if (user.role === "admin") {
      const users = card("Users");
      const activity = card("Recent activity");
      cards.append(users.element, activity.element);
      activity.element.classList.add("card-wide");
      jobs.push(
        fill(
          users.body,
          ctx,
          () => ctx.api.get<Paged<User>>("/api/users", { limit: 1000 }),
          (list) => {
            const admins = list.items.filter((u) => u.role === "admin").length;
            const breakdown =
              list.total === list.items.length ? `${plural(admins, "admin")} · ${plural(list.total - admins, "viewer")}` : null;
            return [
              h(
                "p",
                { class: "stat" },
                String(list.total),
                h("span", { class: "stat-label" }, list.total === 1 ? " account" : " accounts"),
              ),
              breakdown ? h("p", { class: "muted" }, breakdown) : null,
              h("p", {}, h("a", { href: "#/users" }, "Manage users")),
            ];
          },
        ),
        fill(
          activity.body,
          ctx,
          () => ctx.api.get<Paged<AuditEntry>>("/api/audit", { limit: 6 }),
          (log) => [
            log.items.length === 0
              ? emptyState("Nothing recorded yet.")
              : h(
                  "ul",
                  { class: "activity" },
                  ...log.items.map((e) =>
                    h(
                      "li",
                      {},
                      time(e.at, { seconds: true }),
                      h(
                        "span",
                        {},
                        h("strong", {}, e.actor ?? "anonymous"),
                        " ",
                        h("code", {}, e.action),
                        e.target && e.target !== e.actor ? ` ${e.target}` : "",
                      ),
                      badge(e.outcome, e.outcome),
                    ),
                  ),
                ),
            h("p", {}, h("a", { href: "#/audit" }, "Open the audit log")),
          ],
        ),
      );
    }
    await Promise.all(jobs);
  },
});
