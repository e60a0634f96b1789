/** Data tables and the pager under them. */
import { h, type Child } from "./dom.ts";

export interface Column<T> {
  label: string;
  cell(row: T): Child;
  /** A class for the column's cells ("num", "actions"). */
  class?: string;
}

export function dataTable<T>(caption: string, columns: readonly Column<T>[], rows: readonly T[]): HTMLElement {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, ...columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
      h("tbody", {}, ...rows.map((row) => h("tr", {}, ...columns.map((c) => h("td", { class: c.class }, c.cell(row)))))),
    ),
  );
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
