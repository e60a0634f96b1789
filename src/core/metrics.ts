/**
 * Process metrics in the Prometheus text format. Counters live in memory and reset on restart,
 * as Prometheus expects.
 */
const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

function labels(pairs: Record<string, string>): string {
  const body = Object.entries(pairs)
    .map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`)
    .join(",");
  return body ? `{${body}}` : "";
}

class Histogram {
  readonly counts = new Array<number>(BUCKETS.length).fill(0);
  sum = 0;
  count = 0;
  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) this.counts[i]!++;
  }
}

export class Metrics {
  /** Route, then method, then status: nested so that counting builds no key string per request. */
  private readonly requests = new Map<string, Map<string, Map<number, { n: number }>>>();
  private readonly durations = new Map<string, Histogram>();
  private readonly logins = new Map<string, number>();
  private readonly authFailures = new Map<string, number>();
  private readonly rpcCalls = new Map<string, number>();
  /** Call, then status. */
  private readonly licensingCalls = new Map<string, Map<string, number>>();
  /** Host reports on the mTLS listener by result ("ok", or why they were refused). */
  private readonly hostReports = new Map<string, number>();
  private readonly gauges = new Map<string, () => number>();
  private readonly labelledGauges = new Map<string, { label: string; read: () => Promise<Record<string, number>> }>();
  private readonly startedAt = Date.now();

  request(method: string, route: string, status: number, seconds: number): void {
    let byMethod = this.requests.get(route);
    if (!byMethod) this.requests.set(route, (byMethod = new Map()));
    let byStatus = byMethod.get(method);
    if (!byStatus) byMethod.set(method, (byStatus = new Map()));
    const entry = byStatus.get(status);
    if (entry) entry.n++;
    else byStatus.set(status, { n: 1 });
    let h = this.durations.get(route);
    if (!h) this.durations.set(route, (h = new Histogram()));
    h.observe(seconds);
  }

  login(method: string): void {
    this.logins.set(method, (this.logins.get(method) ?? 0) + 1);
  }

  authFailure(reason: string): void {
    this.authFailures.set(reason, (this.authFailures.get(reason) ?? 0) + 1);
  }

  rpc(call: string): void {
    this.rpcCalls.set(call, (this.rpcCalls.get(call) ?? 0) + 1);
  }

  /** Public licensing calls by call (activate, check, deactivate) and status. */
  licensing(call: string, status: string): void {
    let byStatus = this.licensingCalls.get(call);
    if (!byStatus) this.licensingCalls.set(call, (byStatus = new Map()));
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
  }

  hostReport(result: string): void {
    this.hostReports.set(result, (this.hostReports.get(result) ?? 0) + 1);
  }

  /** A gauge read when metrics are scraped, e.g. connected WebSockets. */
  gauge(name: string, read: () => number): void {
    this.gauges.set(name, read);
  }

  /** A gauge of several series told apart by one label, read at once when metrics are scraped (e.g. certificates by state). */
  labelledGauge(name: string, label: string, read: () => Promise<Record<string, number>>): void {
    this.labelledGauges.set(name, { label, read });
  }

  async render(): Promise<string> {
    const labelled = await Promise.all(
      [...this.labelledGauges].map(async ([name, { label, read }]) => ({ name, label, values: await read() })),
    );
    const out: string[] = [];
    const counter = (name: string, help: string, rows: [Record<string, string>, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
      for (const [l, n] of rows) out.push(`${name}${labels(l)} ${n}`);
    };
    counter(
      "latchkey_http_requests_total",
      "HTTP requests by method, route and status.",
      [...this.requests].flatMap(([route, byMethod]) =>
        [...byMethod].flatMap(([method, byStatus]) =>
          [...byStatus].map(([status, { n }]): [Record<string, string>, number] => [{ method, route, status: String(status) }, n]),
        ),
      ),
    );
    out.push(
      "# HELP latchkey_http_request_duration_seconds HTTP request latency by route.",
      "# TYPE latchkey_http_request_duration_seconds histogram",
    );
    for (const [route, h] of this.durations) {
      BUCKETS.forEach((b, i) =>
        out.push(`latchkey_http_request_duration_seconds_bucket${labels({ route, le: String(b) })} ${h.counts[i]}`),
      );
      out.push(`latchkey_http_request_duration_seconds_bucket${labels({ route, le: "+Inf" })} ${h.count}`);
      out.push(`latchkey_http_request_duration_seconds_sum${labels({ route })} ${h.sum}`);
      out.push(`latchkey_http_request_duration_seconds_count${labels({ route })} ${h.count}`);
    }
    counter(
      "latchkey_logins_total",
      "Successful logins by method.",
      [...this.logins].map(([method, n]) => [{ method }, n]),
    );
    counter(
      "latchkey_auth_failures_total",
      "Failed authentications by reason.",
      [...this.authFailures].map(([reason, n]) => [{ reason }, n]),
    );
    counter(
      "latchkey_rpc_calls_total",
      "RPC calls by namespace/name.",
      [...this.rpcCalls].map(([call, n]) => [{ call }, n]),
    );
    counter(
      "latchkey_license_calls_total",
      "Public licensing calls by call and status (activations included).",
      [...this.licensingCalls].flatMap(([call, byStatus]) =>
        [...byStatus].map(([status, n]): [Record<string, string>, number] => [{ call, status }, n]),
      ),
    );
    counter(
      "latchkey_host_reports_total",
      "Host reports on the mTLS listener by result: ok, or why they were refused.",
      [...this.hostReports].map(([result, n]) => [{ result }, n]),
    );
    for (const [name, read] of this.gauges) out.push(`# TYPE ${name} gauge`, `${name} ${read()}`);
    for (const { name, label, values } of labelled) {
      out.push(`# TYPE ${name} gauge`);
      for (const [value, n] of Object.entries(values)) out.push(`${name}${labels({ [label]: value })} ${n}`);
    }
    out.push("# TYPE latchkey_uptime_seconds gauge", `latchkey_uptime_seconds ${(Date.now() - this.startedAt) / 1000}`);
    return out.join("\n") + "\n";
  }
}
