/**
 * The mutual-TLS listener's front. Bun.serve asks for client certificates (`requestCert`) but never
 * shows them to the application (oven-sh/bun#14097); a `Bun.listen` TLS socket does. So the front
 * terminates TLS and reads the peer's certificate from the handshake of that very connection.
 *
 * Requests then take one of two ways:
 * - the fast path: a plain HTTP/1.1 request the caller's `fast.accepts` takes (the host report),
 *   with a Content-Length body, is read and answered here, in order, connection kept alive;
 * - the pipe: anything else (other routes, chunked bodies, upgrades, anything unusual) switches the
 *   connection to a byte pipe to an HTTP server on loopback, for good. That server finds the
 *   certificate of a request by the source port of the front's connection to it (`peerOf`).
 * Measured here, the pipe's extra loopback hop costs about two thirds of a keep-alive request's
 * throughput; the fast path costs about what Bun.serve's own TLS does (docs/benchmarks.md).
 *
 * Certificates are asked for but not required here: a connection without one, or with one that
 * does not verify, is still answered, with 401 where a certificate is needed (SPEC §5), so that the
 * client is told why rather than seeing a failed handshake.
 */
import type { Socket, TCPSocketListener } from "bun";

/** What the front learned of a connection's peer, computed once per connection at its handshake. */
export interface Peer<Identity> {
  /** The client certificate's DER, or null when the client sent none. */
  der: Uint8Array | null;
  /** What the caller's `identify` made of it (verification, revocation, the host it names). */
  identity: Identity;
  /** The client's address as the front saw it. */
  address: string;
}

/** A request on the fast path. */
export interface FastRequest {
  method: string;
  path: string;
  /** Header names lower-case. */
  headers: Map<string, string>;
  body: Uint8Array;
}

export interface FastResponse {
  status: number;
  body: string;
  headers?: Record<string, string>;
}

export interface FastPath<Identity> {
  /** Whether this method and path are answered here; everything else goes to the inner server. */
  accepts(method: string, path: string): boolean;
  handle(request: FastRequest, peer: Peer<Identity>): Promise<FastResponse>;
  /** The largest body read here (larger ones go to the inner server, which refuses them properly). */
  maxBody: number;
  /** Headers every fast answer carries (security headers). */
  headers: Record<string, string>;
}

interface Connection<Identity> {
  down: Socket<Connection<Identity>>;
  up: Socket<Connection<Identity>> | null;
  /** Piped: every byte goes to the inner server from now on. */
  piped: boolean;
  /** Bytes read on the fast path and not yet parsed. */
  pending: Uint8Array | null;
  /** A fast request is being answered: later bytes wait, so that answers keep their order. */
  busy: boolean;
  /** Bytes waiting for the inner server: sent before it connected, or held back by backpressure. */
  toUp: Uint8Array[];
  /** Bytes waiting for the client under backpressure. */
  toDown: Uint8Array[];
  peer: Peer<Identity> | null;
  /** The local port of the connection to the inner server, the key of `byInnerPort`. */
  innerPort: number | null;
  /** The client finished sending: end the inner side once what it sent is through. */
  downEnded: boolean;
  closed: boolean;
  openedAt: number;
  /** When the client last sent something, or was last answered. */
  activeAt: number;
}

export interface MtlsFrontOptions<Identity> {
  hostname: string;
  port: number;
  /** The listener's certificate chain and key (PEM), and the CA whose clients it asks for. */
  cert: string;
  key: string;
  ca: string;
  /** The inner HTTP server on loopback. */
  innerPort: number;
  /** Makes an identity of a certificate (or its absence); called once per connection. */
  identify(der: Uint8Array | null): Identity;
  fast?: FastPath<Identity>;
  /** Connections at most: past it a new one is closed at once (it holds a file, two when piped). */
  maxConnections: number;
  /**
   * A connection that has not finished its handshake this long after opening, or (on the fast path)
   * has been silent this long, is closed. Piped connections (WebSockets) are left to the inner server.
   */
  idleSeconds: number;
}

/** The longest request head read on the fast path; a longer one is the inner server's to refuse. */
const MAX_HEAD = 8 * 1024;
const HEAD_END = Buffer.from("\r\n\r\n");
const REQUEST_LINE = /^([A-Z]{1,16}) (\/[!-~]*) HTTP\/1\.([01])$/;
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*$/;
const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** Writes what it can and keeps the rest for `flush` (the socket's drain). */
function send(socket: Socket<unknown>, queue: Uint8Array[], chunk: Uint8Array): void {
  if (queue.length > 0) {
    queue.push(new Uint8Array(chunk));
    return;
  }
  const written = socket.write(chunk);
  if (written >= 0 && written < chunk.length) queue.push(new Uint8Array(chunk.subarray(written)));
}

function flush(socket: Socket<unknown>, queue: Uint8Array[]): void {
  while (queue.length > 0) {
    const chunk = queue[0]!;
    const written = socket.write(chunk);
    if (written < 0) {
      queue.length = 0;
      return;
    }
    if (written < chunk.length) {
      queue[0] = chunk.subarray(written);
      return;
    }
    queue.shift();
  }
}

function concat(a: Uint8Array | null, b: Uint8Array): Uint8Array {
  if (a === null || a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** A parsed request head, or null when it is anything but plain HTTP/1.1 the fast path may answer. */
function parseHead(head: string): { method: string; path: string; minor: number; headers: Map<string, string> } | null {
  const lines = head.split("\r\n");
  const line = REQUEST_LINE.exec(lines[0]!);
  if (!line) return null;
  const headers = new Map<string, string>();
  for (let i = 1; i < lines.length; i++) {
    const header = HEADER_LINE.exec(lines[i]!);
    if (!header) return null;
    const name = header[1]!.toLowerCase();
    // A repeated header (two Content-Lengths, say) is for a real HTTP parser to judge.
    if (headers.has(name)) return null;
    headers.set(name, header[2]!);
  }
  return { method: line[1]!, path: line[2]!, minor: Number(line[3]), headers };
}

export class MtlsFront<Identity> {
  private listener: TCPSocketListener<Connection<Identity>> | null = null;
  /** Peers by the local port of the front's connection to the inner server. */
  private readonly byInnerPort = new Map<number, Peer<Identity>>();
  private readonly live = new Set<Connection<Identity>>();
  private sweep: ReturnType<typeof setInterval> | null = null;

  constructor(private readonly options: MtlsFrontOptions<Identity>) {}

  get port(): number {
    return this.listener?.port ?? 0;
  }

  /** Connections open now. */
  get size(): number {
    return this.live.size;
  }

  start(): void {
    const { options } = this;
    const front = this;
    this.listener = Bun.listen<Connection<Identity>>({
      hostname: options.hostname,
      port: options.port,
      exclusive: true,
      tls: { cert: options.cert, key: options.key, ca: options.ca, requestCert: true, rejectUnauthorized: false },
      socket: {
        open(down) {
          const now = performance.now();
          down.data = {
            down,
            up: null,
            piped: options.fast === undefined,
            pending: null,
            busy: false,
            toUp: [],
            toDown: [],
            peer: null,
            innerPort: null,
            downEnded: false,
            closed: false,
            openedAt: now,
            activeAt: now,
          };
          if (front.live.size >= options.maxConnections) {
            down.data.closed = true;
            down.end();
            return;
          }
          front.live.add(down.data);
        },
        handshake(down) {
          const connection = down.data;
          if (connection.closed) return;
          const der = peerCertificate(down);
          connection.peer = { der, identity: options.identify(der), address: down.remoteAddress };
          if (connection.piped) front.connectInner(connection);
          else front.serve(connection);
        },
        data(down, chunk) {
          const connection = down.data;
          connection.activeAt = performance.now();
          // What is kept past this call is copied: Bun may reuse the chunk's memory afterwards.
          if (connection.piped) {
            if (connection.up) send(connection.up, connection.toUp, chunk);
            else connection.toUp.push(new Uint8Array(chunk));
            return;
          }
          connection.pending = concat(connection.pending, connection.pending?.length ? chunk : new Uint8Array(chunk));
          front.serve(connection);
        },
        drain(down) {
          flush(down, down.data.toDown);
        },
        end(down) {
          const connection = down.data;
          connection.downEnded = true;
          if (connection.up && connection.toUp.length === 0) connection.up.end();
          else if (!connection.piped && !connection.busy) front.close(connection);
        },
        close(down) {
          front.forget(down.data);
        },
        error(down) {
          front.forget(down.data);
        },
      },
    });
    this.sweep = setInterval(() => this.closeIdle(), Math.min(1000, this.options.idleSeconds * 250));
    this.sweep.unref?.();
  }

  /**
   * Answers the fast requests waiting in the connection's buffer, one at a time; switches it to the
   * pipe at the first request the fast path does not take.
   */
  private serve(connection: Connection<Identity>): void {
    const fast = this.options.fast!;
    while (!connection.busy && !connection.piped && !connection.closed && connection.peer && connection.pending?.length) {
      const buffer = Buffer.from(connection.pending.buffer, connection.pending.byteOffset, connection.pending.length);
      const end = buffer.indexOf(HEAD_END);
      if (end === -1) {
        if (buffer.length > MAX_HEAD) this.pipe(connection);
        return;
      }
      const head = end <= MAX_HEAD ? parseHead(buffer.toString("latin1", 0, end)) : null;
      const length = head?.headers.get("content-length");
      const taken =
        head !== null &&
        fast.accepts(head.method, head.path) &&
        !head.headers.has("transfer-encoding") &&
        !head.headers.has("upgrade") &&
        (length === undefined || (/^\d{1,9}$/.test(length) && Number(length) <= fast.maxBody));
      if (!taken) {
        this.pipe(connection);
        return;
      }
      const bodyLength = length === undefined ? 0 : Number(length);
      const total = end + 4 + bodyLength;
      if (buffer.length < total) {
        // The body is still coming: a client that asked to be told first is told now, once.
        if (head.headers.get("expect")?.toLowerCase() === "100-continue" && buffer.length === end + 4) {
          send(connection.down, connection.toDown, Buffer.from("HTTP/1.1 100 Continue\r\n\r\n"));
        }
        return;
      }
      const body = connection.pending.subarray(end + 4, total);
      connection.pending = total === connection.pending.length ? null : connection.pending.subarray(total);
      const keepAlive =
        head.minor === 1
          ? head.headers.get("connection")?.toLowerCase() !== "close"
          : head.headers.get("connection")?.toLowerCase() === "keep-alive";
      connection.busy = true;
      const peer = connection.peer;
      fast
        .handle({ method: head.method, path: head.path, headers: head.headers, body }, peer)
        .catch((): FastResponse => ({
          status: 500,
          body: '{"error":{"code":"internal","message":"internal error; the server log has the details"}}',
        }))
        .then((response) => {
          connection.busy = false;
          connection.activeAt = performance.now();
          if (connection.closed) return;
          this.respond(connection, response, keepAlive && !connection.downEnded);
          if (!keepAlive || connection.downEnded) this.close(connection);
          else this.serve(connection);
        });
    }
  }

  private respond(connection: Connection<Identity>, response: FastResponse, keepAlive: boolean): void {
    const body = Buffer.from(response.body);
    let head = `HTTP/1.1 ${response.status} ${REASONS[response.status] ?? ""}\r\n`;
    head += `content-type: application/json\r\ncontent-length: ${body.length}\r\n`;
    for (const [name, value] of Object.entries({ ...this.options.fast!.headers, ...response.headers })) head += `${name}: ${value}\r\n`;
    head += keepAlive ? "\r\n" : "connection: close\r\n\r\n";
    send(connection.down, connection.toDown, concat(Buffer.from(head, "latin1"), body));
  }

  /** From now on the connection's bytes go to the inner server, starting with what is buffered. */
  private pipe(connection: Connection<Identity>): void {
    connection.piped = true;
    if (connection.pending) connection.toUp.push(connection.pending);
    connection.pending = null;
    this.connectInner(connection);
  }

  private connectInner(connection: Connection<Identity>): void {
    const front = this;
    Bun.connect<Connection<Identity>>({
      hostname: "127.0.0.1",
      port: this.options.innerPort,
      data: connection,
      socket: {
        open(up) {
          if (connection.closed) {
            up.end();
            return;
          }
          connection.up = up;
          connection.innerPort = up.localPort;
          front.byInnerPort.set(up.localPort, connection.peer!);
          const pending = connection.toUp.splice(0);
          for (const chunk of pending) send(up, connection.toUp, chunk);
          if (connection.downEnded && connection.toUp.length === 0) up.end();
        },
        data(_, chunk) {
          send(connection.down, connection.toDown, chunk);
        },
        drain(up) {
          flush(up, connection.toUp);
          if (connection.downEnded && connection.toUp.length === 0) up.end();
        },
        close() {
          front.close(connection);
        },
        error() {
          front.close(connection);
        },
      },
    }).catch(() => this.close(connection));
  }

  /** The peer of a request the inner server received, by the source port of its connection. */
  peerOf(innerSourcePort: number): Peer<Identity> | undefined {
    return this.byInnerPort.get(innerSourcePort);
  }

  /** Closes the connections whose peer matches (a revoked certificate, a removed host). */
  closeWhere(matches: (peer: Peer<Identity>) => boolean): number {
    let closed = 0;
    for (const connection of this.live) {
      if (connection.peer && matches(connection.peer)) {
        this.close(connection);
        closed++;
      }
    }
    return closed;
  }

  /** The identities of the open connections, for revocation checks. */
  peers(): Peer<Identity>[] {
    const out: Peer<Identity>[] = [];
    for (const connection of this.live) if (connection.peer) out.push(connection.peer);
    return out;
  }

  private close(connection: Connection<Identity>): void {
    if (connection.closed) return;
    connection.closed = true;
    // The client's side first, so that whatever the inner server still sends is cut with it.
    connection.down.end();
    connection.up?.end();
    this.forget(connection);
  }

  private forget(connection: Connection<Identity>): void {
    this.live.delete(connection);
    if (connection.innerPort !== null) this.byInnerPort.delete(connection.innerPort);
    if (!connection.closed) this.close(connection);
  }

  /** Closes what has been silent too long, or never finished its handshake. */
  private closeIdle(): void {
    const cutoff = performance.now() - this.options.idleSeconds * 1000;
    for (const connection of this.live) {
      if (connection.peer === null ? connection.openedAt < cutoff : !connection.piped && !connection.busy && connection.activeAt < cutoff) {
        this.close(connection);
      }
    }
  }

  stop(): void {
    if (this.sweep !== null) clearInterval(this.sweep);
    this.sweep = null;
    this.listener?.stop(true);
    for (const connection of [...this.live]) this.close(connection);
    this.listener = null;
  }
}

/** The DER of the certificate the peer presented in this connection's handshake, if any. */
function peerCertificate(socket: Socket<unknown>): Uint8Array | null {
  const raw = (socket.getPeerCertificate() as { raw?: Uint8Array } | undefined)?.raw;
  return raw && raw.length > 0 ? new Uint8Array(raw) : null;
}
