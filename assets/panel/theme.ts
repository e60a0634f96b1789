/**
 * Light or dark: the user's choice (light, dark, or the system's) is kept in localStorage and
 * applied as `data-theme="light" | "dark"` on <html>, which app.css reads. Imported first by
 * main.ts so that the attribute is set before anything is drawn (the CSP allows no inline script
 * in index.html). Each change of the theme in use, by the user, by the system while the choice
 * is "system", or from another tab, dispatches `themechange` on the document (the charts redraw).
 */

export type ThemeChoice = "system" | "light" | "dark";
export const THEME_CHOICES: readonly ThemeChoice[] = ["system", "light", "dark"];

const STORAGE_KEY = "latchkey.theme";
const systemDark = matchMedia("(prefers-color-scheme: dark)");

export function themeChoice(): ThemeChoice {
  let stored: string | null = null;
  try {
    stored = localStorage.getItem(STORAGE_KEY);
  } catch {
    // Storage may be off (privacy settings): the system decides.
  }
  return THEME_CHOICES.find((choice) => choice === stored) ?? "system";
}

export function setThemeChoice(choice: ThemeChoice): void {
  try {
    if (choice === "system") localStorage.removeItem(STORAGE_KEY);
    else localStorage.setItem(STORAGE_KEY, choice);
  } catch {
    // Not remembered, but applied to this page.
  }
  apply(choice);
}

function apply(choice = themeChoice()): void {
  const theme = choice === "system" ? (systemDark.matches ? "dark" : "light") : choice;
  const root = document.documentElement;
  if (root.dataset.theme === theme) return;
  const first = root.dataset.theme === undefined;
  root.dataset.theme = theme;
  if (!first) document.dispatchEvent(new Event("themechange"));
}

apply();
systemDark.addEventListener("change", () => apply());
window.addEventListener("storage", (event) => {
  if (event.key === STORAGE_KEY || event.key === null) apply();
});
