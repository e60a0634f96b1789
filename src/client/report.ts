/**
 * The woodstock host report: `POST https://HOST:MTLS_PORT/api/hosts/{hostname}/client` with
 * `{interfaces: [{name, addresses}], port, version}`, over TLS with the agent's certificate (which
 * is what identifies it) and trusting only the server's root. The outcome of the last one is kept
 * in `last_report` for `client status`.
 */
import { existsSync, readFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { writeFileAtomic } from "../core/files.ts";
import type { Identity } from "./certificate.ts";
import { REPORT_FILE } from "./config.ts";

export interface HostReport {
  interfaces: { name: string; addresses: string[] }[];
  port: number;
  version: string;
}

/** What became of a report: `status` is the HTTP status, 0 when none came back. */
export interface ReportResult {
  at: string;
  ok: boolean;
  status: number;
  message: string;
}

const REPORT_TIMEOUT_MS = 15_000;
/** The server's limits on a report (64 addresses per interface, 256 interfaces). */
const MAX_INTERFACES = 256;
const MAX_ADDRESSES = 64;

/** The machine's interfaces and their addresses, loopback and other internal ones left out. */
export function machineInterfaces(): HostReport["interfaces"] {
  const interfaces: HostReport["interfaces"] = [];
  for (const [name, entries] of Object.entries(networkInterfaces())) {
    const addresses = (entries ?? []).filter((entry) => !entry.internal).map((entry) => entry.address);
    if (addresses.length > 0) interfaces.push({ name: name.slice(0, 64), addresses: addresses.slice(0, MAX_ADDRESSES) });
  }
  return interfaces.slice(0, MAX_INTERFACES);
}

/** The message of an error reply (`{"error":{"message"}}`), else the body's first line. */
function replyMessage(text: string): string {
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown } };
    if (typeof body.error?.message === "string") return body.error.message;
  } catch {
    // Not JSON: say what came.
  }
  return text.split("\n")[0]!.slice(0, 200) || "(empty answer)";
}

/** Sends one report; never throws (a failure is a result, to log and retry at the next interval). */
export async function sendReport(baseUrl: string, identity: Identity, report: HostReport): Promise<ReportResult> {
  const url = `${baseUrl}/api/hosts/${encodeURIComponent(identity.commonName)}/client`;
  const at = new Date().toISOString();
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(report),
      // A new connection each time: a pooled one would go on presenting the certificate it was opened with.
      keepalive: false,
      signal: AbortSignal.timeout(REPORT_TIMEOUT_MS),
      tls: { cert: identity.certificatePem, key: identity.keyPem, ca: identity.caPem },
    });
    const text = await res.text();
    if (res.ok) return { at, ok: true, status: res.status, message: "ok" };
    return { at, ok: false, status: res.status, message: replyMessage(text) };
  } catch (error) {
    return { at, ok: false, status: 0, message: `cannot reach ${url}: ${(error as Error).message}` };
  }
}

/** A failed report in words: the status (when one came back) and the server's message. */
export function describeReport(result: ReportResult): string {
  return result.status === 0 ? result.message : `${result.status} ${result.message}`;
}

export function writeLastReport(dir: string, result: ReportResult): void {
  writeFileAtomic(join(dir, REPORT_FILE), JSON.stringify(result) + "\n", 0o600);
}

export function readLastReport(dir: string): ReportResult | null {
  const path = join(dir, REPORT_FILE);
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as ReportResult;
  } catch {
    return null;
  }
}
