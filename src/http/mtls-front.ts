/**
 * The mutual-TLS listener's front. Bun.serve asks for client certificates (`requestCert`) but never
 * shows them to the application (oven-sh/bun#14097); a `Bun.listen` TLS socket does. So the front
 * terminates TLS, reads the peer's certificate from the handshake of that very connection, and pipes
 * the decrypted bytes to an HTTP server on loopback (WebSockets included). The inner server finds the
 * certificate of a request by the source port of the front's connection to it (`peerOf`).
 *
 * Certificates are asked for but not required here: a connection without one, or with one that
 * does not verify, still reaches the inner server, which answers 401 where a certificate is needed
 * (SPEC §5), so the client is told why rather than seeing a failed handshake.
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

interface Connection<Identity> {
  down: Socket<Connection<Identity>>;
  up: Socket<Connection<Identity>> | null;
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
}

/** Writes what it can and keeps the rest for `flush` (the socket's drain). */
function send(socket: Socket<unknown>, queue: Uint8Array[], chunk: Uint8Array): void {
  if (queue.length > 0) {
    queue.push(chunk);
    return;
  }
  const written = socket.write(chunk);
  if (written >= 0 && written < chunk.length) queue.push(chunk.subarray(written));
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

export class MtlsFront<Identity> {
  private listener: TCPSocketListener<Connection<Identity>> | null = null;
  /** Peers by the local port of the front's connection to the inner server. */
  private readonly byInnerPort = new Map<number, Peer<Identity>>();
  private readonly live = new Set<Connection<Identity>>();

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
          down.data = { down, up: null, toUp: [], toDown: [], peer: null, innerPort: null, downEnded: false, closed: false };
          front.live.add(down.data);
        },
        handshake(down) {
          const connection = down.data;
          const der = peerCertificate(down);
          connection.peer = { der, identity: options.identify(der), address: down.remoteAddress };
          front.connectInner(connection);
        },
        data(down, chunk) {
          const connection = down.data;
          if (connection.up) send(connection.up, connection.toUp, new Uint8Array(chunk));
          else connection.toUp.push(new Uint8Array(chunk));
        },
        drain(down) {
          flush(down, down.data.toDown);
        },
        end(down) {
          const connection = down.data;
          connection.downEnded = true;
          if (connection.up && connection.toUp.length === 0) connection.up.end();
        },
        close(down) {
          front.forget(down.data);
        },
        error(down) {
          front.forget(down.data);
        },
      },
    });
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
          send(connection.down, connection.toDown, new Uint8Array(chunk));
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

  stop(): void {
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
