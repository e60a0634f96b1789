/** Small DOM helpers: the panel builds its views from plain elements, never from HTML strings. */

export type Child = Node | string | number | null | undefined | false;

/** Attributes by name; a function value under "on<event>" becomes an event listener. */
export type Props = Record<string, string | number | boolean | null | undefined | ((event: Event) => void)>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = String(value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  append(element, ...children);
  return element;
}

export function append(parent: Element, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(typeof child === "number" ? String(child) : child);
  }
}

/** Replaces everything inside `parent`. */
export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}

let counter = 0;
/** A document-unique id for label/description wiring. */
export function uniqueId(prefix: string): string {
  counter += 1;
  return `${prefix}-${counter}`;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const dateTimeSeconds = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** A <time> element for an ISO timestamp (or a placeholder when there is none). */
export function time(iso: string | null, options: { seconds?: boolean; never?: string } = {}): HTMLElement {
  if (iso === null) return h("span", { class: "muted" }, options.never ?? "never");
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h("span", {}, iso);
  return h("time", { datetime: iso, title: iso }, (options.seconds ? dateTimeSeconds : dateTime).format(date));
}

export function badge(text: string, kind: string, title?: string): HTMLElement {
  return h("span", { class: `badge badge-${kind}`, title }, text);
}

/** The block a list shows when it has nothing to show. */
export function emptyState(title: string, detail?: string): HTMLElement {
  return h("div", { class: "empty" }, h("p", { class: "empty-title" }, title), detail ? h("p", { class: "muted" }, detail) : null);
}

export function plural(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}
