/**
 * The caller's address: the peer of the connection, or, when that peer is a trusted proxy
 * (`--trusted-proxy`), the address the proxy reports in `X-Forwarded-For` (or, when the proxy sets
 * none, `Forwarded`). Throttles, the audit log and the server log all use it.
 */
import { BlockList, isIP } from "node:net";

/** The addresses whose forwarding headers are believed. */
export class TrustedProxies {
  private readonly list = new BlockList();

  /** `cidrs`: validated by `parseCidr` (config.ts does it at start-up). */
  constructor(cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const { address, prefix, family } = parseCidr(cidr)!;
      this.list.addSubnet(address, prefix, family);
    }
  }

  has(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 4 ? "ipv4" : "ipv6");
  }
}

/** `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or /128); null when it is none of these. */
export function parseCidr(text: string): { address: string; prefix: number; family: "ipv4" | "ipv6" } | null {
  const [address = "", prefixText, ...rest] = text.trim().split("/");
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return null;
  const max = family === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (prefix > max) return null;
  return { address, prefix, family: family === 4 ? "ipv4" : "ipv6" };
}

/** An address as proxies write it (`1.2.3.4:5678`, `[::1]:80`, `"[::1]"`), reduced to the IP; null if none. */
function bareAddress(text: string): string | null {
  let value = text.trim().replace(/^"(.*)"$/, "$1");
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(value);
  if (bracketed) value = bracketed[1]!;
  else if (/^[\d.]+:\d+$/.test(value)) value = value.slice(0, value.lastIndexOf(":"));
  return isIP(value) !== 0 ? value : null;
}

/** The `for=` addresses of a `Forwarded` header, in order (RFC 7239); unparseable ones as null. */
function forwardedFor(header: string): (string | null)[] {
  const out: (string | null)[] = [];
  for (const element of header.split(",")) {
    for (const pair of element.split(";")) {
      const eq = pair.indexOf("=");
      if (eq !== -1 && pair.slice(0, eq).trim().toLowerCase() === "for") out.push(bareAddress(pair.slice(eq + 1)));
    }
  }
  return out;
}

/**
 * The client's address for a request whose connection came from `peer`. Only a trusted peer may
 * name another address; the chain it reports is read from the right, past every trusted proxy,
 * so that what a client wrote into the header itself is never believed. Falls back to the peer.
 */
export function clientAddress(peer: string | null, headers: Headers, trusted: TrustedProxies | null): string | null {
  if (peer === null || trusted === null || !trusted.has(peer)) return peer;
  const xff = headers.get("x-forwarded-for");
  const chain = xff !== null ? xff.split(",").map(bareAddress) : forwardedFor(headers.get("forwarded") ?? "");
  for (let i = chain.length - 1; i >= 0; i--) {
    const hop = chain[i];
    // A hop that is not an address cannot be followed: what lies to its left is unverifiable.
    if (hop === null || hop === undefined) return peer;
    if (!trusted.has(hop) || i === 0) return hop;
  }
  return peer;
}
