/**
 * Charts over time, drawn by uPlot (bundled into the panel: no CDN). A chart is a section with its
 * heading and a sentence that says what it shows (the totals, for everyone, screen readers
 * included); the plot itself is hidden from assistive technology. Colours come from the theme's
 * CSS variables, read when the plot is drawn, and the plot is drawn again when the theme changes
 * (`themechange` on document, or the system's colour scheme) and whenever its box changes width.
 *
 * Also here: the range switch the charts share, and the checks-and-activations charts of one
 * license key or application.
 */
import uPlot from "uplot";
import { isAbort, type Api } from "./api.ts";
import { h, replace, uniqueId } from "./dom.ts";
import { describeError } from "./forms.ts";
import type { LicensingStats, StatsRange } from "./model.ts";

export const RANGES: readonly { value: StatsRange; label: string; phrase: string }[] = [
  { value: "24h", label: "24 hours", phrase: "in the last 24 hours" },
  { value: "7d", label: "7 days", phrase: "in the last 7 days" },
  { value: "30d", label: "30 days", phrase: "in the last 30 days" },
];

export function isRange(value: string | null): value is StatsRange {
  return RANGES.some((r) => r.value === value);
}

export function rangePhrase(range: StatsRange): string {
  return RANGES.find((r) => r.value === range)!.phrase;
}

const numbers = new Intl.NumberFormat();

/** "1,234 checks", "1 check". */
export function counted(n: number, one: string, many = `${one}s`): string {
  return `${numbers.format(n)} ${n === 1 ? one : many}`;
}

export function sum(values: readonly number[] | null): number {
  return values === null ? 0 : values.reduce((total, v) => total + v, 0);
}

export function peak(values: readonly number[] | null): number {
  return values === null ? 0 : values.reduce((most, v) => Math.max(most, v), 0);
}

/**
 * `request` once, `delayMs` after the first call since the last: live events say that something
 * was counted, and a burst of them loads the charts once.
 */
export function soon(request: () => void, signal: AbortSignal, delayMs = 3000): () => void {
  let timer: ReturnType<typeof setTimeout> | null = null;
  signal.addEventListener("abort", () => timer !== null && clearTimeout(timer), { once: true });
  return () => {
    timer ??= setTimeout(() => {
      timer = null;
      if (!signal.aborted) request();
    }, delayMs);
  };
}

/** Toggle buttons (one pressed) choosing the time range of the charts near them. */
export class RangeSwitch {
  readonly element: HTMLElement;
  private readonly buttons: HTMLButtonElement[];

  constructor(
    label: string,
    private current: StatsRange,
    choose: (range: StatsRange) => void,
  ) {
    this.buttons = RANGES.map((r) =>
      h(
        "button",
        {
          type: "button",
          class: "range-button",
          "data-range": r.value,
          "aria-pressed": String(r.value === current),
          onclick: () => {
            if (r.value === this.current) return;
            this.set(r.value);
            choose(r.value);
          },
        },
        r.label,
      ),
    );
    this.element = h("div", { class: "range-switch", role: "group", "aria-label": label }, ...this.buttons);
  }

  get value(): StatsRange {
    return this.current;
  }

  set(range: StatsRange): void {
    this.current = range;
    for (const button of this.buttons) button.setAttribute("aria-pressed", String(button.dataset.range === range));
  }
}

/** One series of a chart: its name, its colour (a CSS variable of the theme) and its values. */
export interface Line {
  label: string;
  color: string;
  values: number[];
  /** The chart's main series: a wide pale bar per bucket, with the others' narrow bars in front. */
  main?: boolean;
}

/** A scratch canvas: it turns any CSS colour into one a shade can be made of. */
let scratch: CanvasRenderingContext2D | null = null;

/** `color` at `alpha` opacity, for the pale bars of a chart's main series. */
function translucent(color: string, alpha: number): string {
  scratch ??= document.createElement("canvas").getContext("2d");
  if (!scratch) return color;
  scratch.fillStyle = "#000";
  scratch.fillStyle = color;
  const normal = String(scratch.fillStyle);
  const hex = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(normal);
  if (hex) return `rgba(${parseInt(hex[1]!, 16)}, ${parseInt(hex[2]!, 16)}, ${parseInt(hex[3]!, 16)}, ${alpha})`;
  const rgba = /^rgba\((\d+), (\d+), (\d+), [\d.]+\)$/.exec(normal);
  return rgba ? `rgba(${rgba[1]}, ${rgba[2]}, ${rgba[3]}, ${alpha})` : color;
}

const darkScheme = typeof matchMedia === "function" ? matchMedia("(prefers-color-scheme: dark)") : null;

/** A chart over time: heading, summary sentence and plot. */
export class TimeChart {
  readonly element: HTMLElement;
  private readonly summary = h("p", { class: "chart-summary" }, "Loading…");
  private readonly plot = h("div", { class: "chart-plot", "aria-hidden": "true" });
  private readonly observer: ResizeObserver;
  private readonly redraw = () => this.rebuild();
  private uplot: uPlot | null = null;
  private data: { timestamps: number[]; lines: Line[] } | null = null;
  /** What the plot was built for: the same lines with new values only need new data. */
  private shape = "";
  private width = 0;

  constructor(
    title: string,
    private readonly options: { heading?: "h3" | "h4"; height?: number; signal?: AbortSignal } = {},
  ) {
    const headingId = uniqueId("chart");
    this.element = h(
      "section",
      { class: "chart", "aria-labelledby": headingId },
      h(options.heading ?? "h3", { id: headingId, class: "chart-title" }, title),
      this.summary,
      this.plot,
    );
    this.observer = new ResizeObserver(() => {
      const width = this.plot.clientWidth;
      if (width === this.width) return;
      this.width = width;
      if (this.uplot && width > 0) this.uplot.setSize({ width, height: this.height });
      else this.draw();
    });
    this.observer.observe(this.plot);
    document.addEventListener("themechange", this.redraw);
    darkScheme?.addEventListener("change", this.redraw);
    options.signal?.addEventListener("abort", () => this.destroy(), { once: true });
  }

  private get height(): number {
    return this.options.height ?? 180;
  }

  /** Shows new data: `summary` says in words what the plot shows. */
  update(timestamps: number[], lines: Line[], summary: string): void {
    this.summary.textContent = summary;
    this.data = { timestamps, lines };
    this.draw();
  }

  destroy(): void {
    this.observer.disconnect();
    document.removeEventListener("themechange", this.redraw);
    darkScheme?.removeEventListener("change", this.redraw);
    this.uplot?.destroy();
    this.uplot = null;
  }

  /** The theme changed: the colours are read again. */
  private rebuild(): void {
    this.shape = "";
    this.draw();
  }

  private draw(): void {
    const width = this.plot.clientWidth;
    if (!this.data || width === 0) return;
    const { timestamps, lines } = this.data;
    const data: uPlot.AlignedData = [timestamps, ...lines.map((l) => l.values)];
    const shape = JSON.stringify([timestamps[1]! - timestamps[0]!, lines.map((l) => [l.label, l.color, l.main])]);
    if (this.uplot && shape === this.shape) {
      this.uplot.setData(data);
      return;
    }
    this.uplot?.destroy();
    this.shape = shape;
    this.width = width;
    this.uplot = new uPlot(this.plotOptions(lines, width, timestamps), data, this.plot);
  }

  private plotOptions(lines: Line[], width: number, timestamps: number[]): uPlot.Options {
    const style = getComputedStyle(this.element);
    const color = (name: string) => style.getPropertyValue(name).trim() || "#777";
    const text = color("--muted");
    const rule = color("--border");
    const axis = {
      stroke: text,
      grid: { stroke: rule, width: 1 },
      ticks: { stroke: rule, width: 1, size: 4 },
      font: "12px system-ui, sans-serif",
    };
    // A bar per bucket, centred on it: the first and last bars need half a bucket of room.
    const half = ((timestamps[1] ?? 0) - (timestamps[0] ?? 0)) / 2;
    return {
      width,
      height: this.height,
      padding: [8, 8, 0, 0],
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      legend: { show: true, live: true },
      scales: {
        x: { time: true, range: (_u, min, max) => [min - half, max + half] },
        y: { range: (_u, _min, max) => uPlot.rangeNum(0, Math.max(max, 1), 0.1, true) },
      },
      axes: [
        { ...axis, space: 60 },
        {
          ...axis,
          size: 44,
          // Whole numbers: these are counts.
          incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7],
          values: (_u, splits) => splits.map((v) => numbers.format(v)),
        },
      ],
      series: [
        {},
        ...lines.map((line): uPlot.Series => {
          const stroke = color(line.color);
          return {
            label: line.label,
            stroke,
            width: 0,
            // The main series is a wide bar; the others narrow bars in front of it, so both show.
            fill: line.main ? translucent(stroke, 0.45) : stroke,
            paths: uPlot.paths.bars!({ size: line.main ? [0.85, 48] : [0.4, 20], align: 0 }),
            points: { show: false },
            value: (_u, v) => (v === null ? "–" : numbers.format(v)),
          };
        }),
      ],
    };
  }
}

/** Checks and activations of one license key or application, over a range the user picks. */
export class LicensingCharts {
  readonly element: HTMLElement;
  private readonly checks: TimeChart;
  private readonly activations: TimeChart;
  private readonly range: RangeSwitch;
  private readonly status = h("p", { class: "error-text", role: "alert", hidden: true });

  constructor(
    private readonly api: Api,
    /** The series' path, e.g. `/api/licenses/7/stats`: it may change (another application chosen). */
    private path: string,
    /** `heading`: the section's level (its charts' is the next). */
    options: { title: string; heading: "h2" | "h3"; range?: StatsRange; signal: AbortSignal; intro?: HTMLElement },
  ) {
    const charts = { heading: options.heading === "h2" ? ("h3" as const) : ("h4" as const), height: 140, signal: options.signal };
    this.checks = new TimeChart("Checks", charts);
    this.activations = new TimeChart("Activations", charts);
    this.range = new RangeSwitch(`Time range of ${options.title.toLowerCase()}`, options.range ?? "7d", () => void this.load());
    const headingId = uniqueId("usage");
    this.element = h(
      "section",
      { class: "usage-charts", "aria-labelledby": headingId },
      h("div", { class: "charts-head" }, h(options.heading, { id: headingId }, options.title), this.range.element),
      options.intro ?? null,
      this.status,
      h("div", { class: "charts charts-pair" }, this.checks.element, this.activations.element),
    );
  }

  show(path: string): Promise<void> {
    this.path = path;
    return this.load();
  }

  destroy(): void {
    this.checks.destroy();
    this.activations.destroy();
  }

  async load(): Promise<void> {
    if (this.path === "") return;
    const range = this.range.value;
    const path = this.path;
    let stats: LicensingStats;
    try {
      stats = await this.api.get<LicensingStats>(path, { range });
    } catch (error) {
      if (isAbort(error)) return;
      this.status.hidden = false;
      replace(this.status, `The use over time could not be loaded. ${describeError(error)}`);
      return;
    }
    if (range !== this.range.value || path !== this.path) return;
    this.status.hidden = true;
    const s = stats.series;
    const when = rangePhrase(range);
    const checks = sum(s.checks_ok) + sum(s.checks_failed);
    const activations = sum(s.activations_ok) + sum(s.activations_failed);
    this.checks.update(
      stats.timestamps,
      [
        { label: "Passed", color: "--accent", values: s.checks_ok ?? [], main: true },
        { label: "Failed", color: "--danger", values: s.checks_failed ?? [] },
      ],
      `${counted(checks, "check")}, ${numbers.format(sum(s.checks_failed))} failed ${when}.`,
    );
    this.activations.update(
      stats.timestamps,
      [
        { label: "Passed", color: "--success", values: s.activations_ok ?? [], main: true },
        { label: "Failed", color: "--danger", values: s.activations_failed ?? [] },
      ],
      `${counted(activations, "activation")}, ${numbers.format(sum(s.activations_failed))} failed ${when}.`,
    );
  }
}
