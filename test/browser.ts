/** Shared support for the tests that drive Debian's Chromium through playwright-core. */
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

/** Headless, and without the background traffic a closed network refuses. */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * How long a page action (a click, a wait for text) may take. Pages fetch from a real server; on a
 * busy 2-core machine (the whole suite, other processes) a page with its data can take seconds.
 */
export const ACTION_TIMEOUT_MS = 10_000;

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });
}

/** Turns every CSP violation in the context's pages into a console error, which `watchPage` collects. */
export async function reportCspViolations(context: BrowserContext): Promise<void> {
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
}

/**
 * Collects console errors, CSP warnings and page errors into `problems`; `expected` matches the
 * console errors a scenario provokes on purpose (Chromium logs each refused fetch).
 */
export function watchPage(page: Page, problems: string[], expected: RegExp): void {
  page.on("console", (message) => {
    if (message.type() === "error" && !expected.test(message.text())) problems.push(`console: ${message.text()}`);
    if (message.type() === "warning" && /Content Security Policy|Refused to/i.test(message.text()))
      problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
}

export async function signIn(page: Page, username: string, password: string): Promise<void> {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor();
}

export function nav(page: Page) {
  return page.getByRole("navigation", { name: "Main" });
}
