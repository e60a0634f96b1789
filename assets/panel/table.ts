/** Data tables and the pager under them. */
import { h, type Child } from "./dom.ts";

export interface Column<T> {
  label: string;
  cell(row: T): Child;
  /** A class for the column's cells ("num", "actions"). */
  class?: string;
}

/**
 * A table in a frame of its own. When the table is wider than the frame, the frame scrolls and
 * becomes a labelled, focusable region (so that the keyboard can scroll it) and the row actions
 * stay at its right edge. On a phone app.css shows each row as a card, its labels from each cell's
 * `data-label`; the explicit roles keep it a table for screen readers there, where CSS display
 * would otherwise drop them.
 */
export function dataTable<T>(caption: string, columns: readonly Column<T>[], rows: readonly T[]): HTMLElement {
  const table = h(
    "table",
    { role: "table" },
    h("caption", { class: "visually-hidden" }, caption),
    h(
      "thead",
      { role: "rowgroup" },
      h("tr", { role: "row" }, ...columns.map((c) => h("th", { scope: "col", role: "columnheader", class: c.class }, c.label))),
    ),
    h(
      "tbody",
      { role: "rowgroup" },
      ...rows.map((row) =>
        h("tr", { role: "row" }, ...columns.map((c) => h("td", { role: "cell", class: c.class, "data-label": c.label }, c.cell(row)))),
      ),
    ),
  );
  const wrap = h("div", { class: "table-wrap" }, table);
  const fit = () => {
    const scrolls = wrap.scrollWidth > wrap.clientWidth + 1;
    wrap.classList.toggle("table-scrolls", scrolls);
    if (scrolls) {
      wrap.setAttribute("role", "region");
      wrap.setAttribute("aria-label", caption);
      wrap.tabIndex = 0;
    } else {
      wrap.removeAttribute("role");
      wrap.removeAttribute("aria-label");
      wrap.removeAttribute("tabindex");
    }
  };
  // Laid out once the page puts it in the document; removed with it, it reports a size of zero.
  const observer = new ResizeObserver(() => (wrap.isConnected ? fit() : observer.disconnect()));
  observer.observe(wrap);
  observer.observe(table);
  return wrap;
}

/** "Showing 51–100 of 240" with Previous / Next; keeps the focus when a button becomes disabled. */
export class Pager {
  readonly element: HTMLElement;
  private readonly summary = h("span", { class: "pager-summary", "aria-live": "polite" });
  private readonly previous = h("button", { type: "button", class: "secondary" }, "Previous");
  private readonly next = h("button", { type: "button", class: "secondary" }, "Next");
  private offset = 0;

  constructor(
    label: string,
    private readonly limit: number,
    go: (offset: number) => void,
  ) {
    this.element = h(
      "nav",
      { class: "pager", "aria-label": label },
      this.summary,
      h("span", { class: "pager-buttons" }, this.previous, this.next),
    );
    this.previous.addEventListener("click", () => go(Math.max(0, this.offset - this.limit)));
    this.next.addEventListener("click", () => go(this.offset + this.limit));
    this.element.hidden = true;
  }

  update(offset: number, shown: number, total: number): void {
    this.offset = offset;
    this.element.hidden = total <= this.limit && offset === 0;
    this.summary.textContent = shown === 0 ? `None of ${total}` : `Showing ${offset + 1}–${offset + shown} of ${total}`;
    const focused = document.activeElement;
    this.previous.disabled = offset === 0;
    this.next.disabled = offset + shown >= total;
    if (focused === this.previous && this.previous.disabled && !this.next.disabled) this.next.focus();
    if (focused === this.next && this.next.disabled && !this.previous.disabled) this.previous.focus();
  }
}
