import { describe, expect, test } from "bun:test";
import { AppError } from "./errors.ts";
import {
  SCRAM_MIN_ITERATIONS,
  buildServerFirst,
  clientFinalMessage,
  clientFirstMessage,
  decoyCredentials,
  deriveScramCredentials,
  escapeSaslName,
  newServerNonce,
  parseClientFinal,
  parseClientFirst,
  saslPrep,
  unescapeSaslName,
  verifyClientFinal,
  verifyServerFinal,
  type ScramCredentials,
} from "./scram.ts";

// RFC 7677 section 3.
const RFC = {
  username: "user",
  password: "pencil",
  clientNonce: "rOprNGfwEbeRWgbNEkqO",
  clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
  combinedNonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
  salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
  serverFirst: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
  clientFinal: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
  serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

const rfcCredentials = () => deriveScramCredentials(RFC.password, 4096, Buffer.from(RFC.salt, "base64"));

/** A full exchange through the module's client and server halves. */
async function exchange(opts: {
  storedPassword: string;
  clientPassword: string;
  username?: string;
  tamper?: (clientFinal: string) => string;
}) {
  const credentials = await deriveScramCredentials(opts.storedPassword);
  const client = clientFirstMessage(opts.username ?? "alice");
  const clientFirst = parseClientFirst(client.message);
  const combinedNonce = clientFirst.clientNonce + newServerNonce();
  const serverFirst = buildServerFirst(combinedNonce, credentials.salt, credentials.iterations);
  const final = await clientFinalMessage({
    password: opts.clientPassword,
    clientFirstBare: client.bare,
    serverFirst,
    clientNonce: client.nonce,
  });
  const text = opts.tamper ? opts.tamper(final.message) : final.message;
  const serverFinal = verifyClientFinal({
    clientFirst,
    serverFirst,
    clientFinal: parseClientFinal(text),
    combinedNonce,
    credentials,
  });
  return { serverFinal, expectedServerSignature: final.expectedServerSignature, clientFirst };
}

function appErrorOf(fn: () => unknown): AppError {
  try {
    fn();
  } catch (error) {
    if (error instanceof AppError) return error;
    throw new Error(`expected an AppError, got ${String(error)}`);
  }
  throw new Error("expected an AppError, but nothing was thrown");
}

describe("RFC 7677 test vector", () => {
  test("server accepts the RFC client-final and produces the RFC server-final", async () => {
    const clientFirst = parseClientFirst(RFC.clientFirst);
    expect(clientFirst).toEqual({
      gs2Header: "n,,",
      username: "user",
      clientNonce: RFC.clientNonce,
      bare: "n=user,r=rOprNGfwEbeRWgbNEkqO",
    });
    const credentials = await rfcCredentials();
    expect(buildServerFirst(RFC.combinedNonce, credentials.salt, credentials.iterations)).toBe(RFC.serverFirst);
    const serverFinal = verifyClientFinal({
      clientFirst,
      serverFirst: RFC.serverFirst,
      clientFinal: parseClientFinal(RFC.clientFinal),
      combinedNonce: RFC.combinedNonce,
      credentials,
    });
    expect(serverFinal).toBe(RFC.serverFinal);
  });

  test("client produces exactly the RFC client-first and client-final", async () => {
    const first = clientFirstMessage(RFC.username, RFC.clientNonce);
    expect(first.message).toBe(RFC.clientFirst);
    const final = await clientFinalMessage({
      password: RFC.password,
      clientFirstBare: first.bare,
      serverFirst: RFC.serverFirst,
      clientNonce: first.nonce,
    });
    expect(final.message).toBe(RFC.clientFinal);
    expect(`v=${final.expectedServerSignature}`).toBe(RFC.serverFinal);
    expect(verifyServerFinal(RFC.serverFinal, final.expectedServerSignature)).toBe(true);
  });

  test("a single flipped proof bit is rejected", async () => {
    const proof = Buffer.from(parseClientFinal(RFC.clientFinal).proof, "base64");
    proof[0] = proof[0]! ^ 1;
    const tampered = RFC.clientFinal.replace(/p=.*$/, `p=${proof.toString("base64")}`);
    const serverFinal = verifyClientFinal({
      clientFirst: parseClientFirst(RFC.clientFirst),
      serverFirst: RFC.serverFirst,
      clientFinal: parseClientFinal(tampered),
      combinedNonce: RFC.combinedNonce,
      credentials: await rfcCredentials(),
    });
    expect(serverFinal).toBeNull();
  });
});

describe("credentials agree with an independent WebCrypto derivation", () => {
  // RFC 5802 section 3 computed with crypto.subtle instead of node:crypto.
  async function webCryptoKeys(password: string, salt: Uint8Array<ArrayBuffer>, iterations: number) {
    const subtle = globalThis.crypto.subtle;
    const text = new TextEncoder();
    const base = await subtle.importKey("raw", text.encode(password), "PBKDF2", false, ["deriveBits"]);
    const salted = await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, base, 256);
    const key = await subtle.importKey("raw", salted, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const clientKey = await subtle.sign("HMAC", key, text.encode("Client Key"));
    const serverKey = await subtle.sign("HMAC", key, text.encode("Server Key"));
    const storedKey = await subtle.digest("SHA-256", clientKey);
    return {
      storedKey: Buffer.from(storedKey).toString("base64"),
      serverKey: Buffer.from(serverKey).toString("base64"),
    };
  }

  test.each([
    ["pencil", 4096],
    ["correct horse battery staple", 5000],
    ["pässwörd-ünïcode-密码", 4096],
  ])("password %p, %p iterations", async (password, iterations) => {
    const salt = crypto.getRandomValues(new Uint8Array(16));
    const ours = await deriveScramCredentials(password, iterations, salt);
    expect(ours.salt).toBe(Buffer.from(salt).toString("base64"));
    expect(ours.iterations).toBe(iterations);
    expect({ storedKey: ours.storedKey, serverKey: ours.serverKey }).toEqual(
      await webCryptoKeys(password.normalize("NFKC"), salt, iterations),
    );
  });

  test("defaults: 4096 iterations and a fresh 16-byte salt", async () => {
    const a = await deriveScramCredentials("x");
    const b = await deriveScramCredentials("x");
    expect(a.iterations).toBe(SCRAM_MIN_ITERATIONS);
    expect(Buffer.from(a.salt, "base64").length).toBe(16);
    expect(a.salt).not.toBe(b.salt);
    expect(a.storedKey).not.toBe(b.storedKey);
  });

  test("iteration counts below the minimum are refused", async () => {
    await expect(deriveScramCredentials("x", 4095)).rejects.toThrow(/at least 4096/);
  });
});

describe("full exchange", () => {
  test("right password: server-final verifies on the client", async () => {
    const { serverFinal, expectedServerSignature } = await exchange({
      storedPassword: "s3cret",
      clientPassword: "s3cret",
    });
    expect(serverFinal).not.toBeNull();
    expect(verifyServerFinal(serverFinal!, expectedServerSignature)).toBe(true);
  });

  test("wrong password is rejected", async () => {
    const { serverFinal } = await exchange({ storedPassword: "s3cret", clientPassword: "s3cret!" });
    expect(serverFinal).toBeNull();
  });

  test("tampered nonce is rejected", async () => {
    const { serverFinal } = await exchange({
      storedPassword: "s3cret",
      clientPassword: "s3cret",
      // The nonce's last character changed (to one it is not: a nonce may end in "X" already).
      tamper: (m) => m.replace(/,r=([^,]*)/, (_, nonce: string) => `,r=${nonce.slice(0, -1)}${nonce.endsWith("X") ? "Y" : "X"}`),
    });
    expect(serverFinal).toBeNull();
  });

  test("a valid proof over a different combined nonce is rejected", async () => {
    const credentials = await rfcCredentials();
    const serverFinal = verifyClientFinal({
      clientFirst: parseClientFirst(RFC.clientFirst),
      serverFirst: RFC.serverFirst,
      clientFinal: parseClientFinal(RFC.clientFinal),
      combinedNonce: `${RFC.clientNonce}somethingElse`,
      credentials,
    });
    expect(serverFinal).toBeNull();
  });

  test("wrong c= is rejected", async () => {
    // base64("y,,"): claims a different gs2 header than the client-first used.
    const { serverFinal } = await exchange({
      storedPassword: "s3cret",
      clientPassword: "s3cret",
      tamper: (m) => m.replace("c=biws,", "c=eSws,"),
    });
    expect(serverFinal).toBeNull();
  });

  test('gs2 header "y,," is accepted when c= matches it', async () => {
    const clientFirst = parseClientFirst("y,,n=user,r=abc");
    expect(clientFirst.gs2Header).toBe("y,,");
    const credentials: ScramCredentials = await deriveScramCredentials("pw");
    const combinedNonce = "abcdef";
    const serverFirst = buildServerFirst(combinedNonce, credentials.salt, credentials.iterations);
    // Our client always sends "n,,", so for "y,," the c= mismatch must fail...
    const final = await clientFinalMessage({
      password: "pw",
      clientFirstBare: clientFirst.bare,
      serverFirst,
      clientNonce: "abc",
    });
    const args = { clientFirst, serverFirst, combinedNonce, credentials };
    expect(verifyClientFinal({ ...args, clientFinal: parseClientFinal(final.message) })).toBeNull();
    // ...while the same exchange with a client-first of "n,," succeeds.
    const nFirst = parseClientFirst("n,,n=user,r=abc");
    expect(verifyClientFinal({ ...args, clientFirst: nFirst, clientFinal: parseClientFinal(final.message) })).toBe(
      `v=${final.expectedServerSignature}`,
    );
  });

  test("usernames with ',' and '=' survive the exchange", async () => {
    const { serverFinal, clientFirst } = await exchange({
      storedPassword: "pw",
      clientPassword: "pw",
      username: "a,b=c==,",
    });
    expect(clientFirst.username).toBe("a,b=c==,");
    expect(serverFinal).not.toBeNull();
  });

  test("server nonces are fresh 24-byte base64", () => {
    const a = newServerNonce();
    expect(Buffer.from(a, "base64").length).toBe(24);
    expect(a).not.toBe(newServerNonce());
  });
});

describe("malformed client messages", () => {
  const proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

  const clientFirstCases: [string, string, RegExp][] = [
    ["empty", "", /empty/],
    ["channel binding", "p=tls-server-end-point,,n=user,r=abc", /channel binding/],
    ["unknown cbind flag", "x,,n=user,r=abc", /gs2 header/],
    ["gs2 header missing a comma", "n,n=user,r=abc", /gs2 header/],
    ["authorization identity", "n,a=admin,n=user,r=abc", /authorization identity/],
    ["garbage authzid", "n,zzz,n=user,r=abc", /gs2 header/],
    ["mandatory extension", "n,,m=ext,n=user,r=abc", /mandatory extension/],
    ["attributes out of order", "n,,r=abc,n=user", /n=username/],
    ["missing nonce", "n,,n=user", /r=nonce/],
    ["empty username", "n,,n=,r=abc", /username is empty/],
    ["bad escape", "n,,n=us=2Ber,r=abc", /escape/],
    ["trailing '='", "n,,n=user=,r=abc", /escape/],
    ["empty nonce", "n,,n=user,r=", /nonce is empty/],
    ["non-printable nonce", "n,,n=user,r=ab\u0001c", /printable/],
    ["non-ASCII nonce", "n,,n=user,r=abé", /printable/],
    ["nonce with ','", "n,,n=user,r=ab,cd", /attribute=value/],
    ["NUL in username", "n,,n=us\u0000er,r=abc", /NUL/],
    ["lone surrogate", "n,,n=\ud800,r=abc", /Unicode/],
    ["oversized", `n,,n=${"a".repeat(1100)},r=abc`, /longer than 1024/],
  ];

  test.each(clientFirstCases)("client-first: %s", (_name, message, pattern) => {
    const error = appErrorOf(() => parseClientFirst(message));
    expect(error.status).toBe(400);
    expect(error.code).toBe("bad_request");
    expect(error.field).toBe("client_first");
    expect(error.message).toMatch(pattern);
  });

  const clientFinalCases: [string, string, RegExp][] = [
    ["empty", "", /empty/],
    ["missing proof", "c=biws,r=abc", /p=proof/],
    ["only a proof", `p=${proof}`, /c=channel-binding/],
    ["attributes out of order", `r=abc,c=biws,p=${proof}`, /c=channel-binding/],
    ["proof not last", `c=biws,p=${proof},r=abc`, /r=nonce/],
    ["bad base64 in c=", `c=bi!s,r=abc,p=${proof}`, /not base64/],
    ["empty nonce", `c=biws,r=,p=${proof}`, /nonce is empty/],
    ["non-printable nonce", `c=biws,r=a\u007fbc,p=${proof}`, /printable/],
    ["empty proof", "c=biws,r=abc,p=", /not base64/],
    ["unpadded proof", `c=biws,r=abc,p=${proof.slice(0, -1)}`, /not base64/],
    ["short proof", "c=biws,r=abc,p=AAAA", /32 bytes/],
    ["malformed extension", `c=biws,r=abc,junk,p=${proof}`, /attribute=value/],
    ["oversized", `c=biws,r=${"a".repeat(2100)},p=${proof}`, /longer than 2048/],
  ];

  test.each(clientFinalCases)("client-final: %s", (_name, message, pattern) => {
    const error = appErrorOf(() => parseClientFinal(message));
    expect(error.status).toBe(400);
    expect(error.code).toBe("bad_request");
    expect(error.field).toBe("client_final");
    expect(error.message).toMatch(pattern);
  });

  test("unknown optional extensions are accepted and kept in the signed text", () => {
    expect(parseClientFirst("n,,n=user,r=abc,x=1").bare).toBe("n=user,r=abc,x=1");
    expect(parseClientFinal(`c=biws,r=abc,x=1,p=${proof}`).withoutProof).toBe("c=biws,r=abc,x=1");
  });
});

describe("username escapes", () => {
  test.each(["user", "a,b", "a=b", "=2C", "=3D,=", ",,==", "üsér"])("%p round trips", (name) => {
    const escaped = escapeSaslName(name);
    expect(escaped).not.toMatch(/,/);
    expect(unescapeSaslName(escaped)).toBe(name);
    expect(parseClientFirst(clientFirstMessage(name, "abc").message).username).toBe(name);
  });

  test("escapes are exactly =2C and =3D", () => {
    expect(escapeSaslName("a,b=c")).toBe("a=2Cb=3Dc");
    expect(parseClientFirst("n,,n=a=2Cb=3Dc,r=abc").username).toBe("a,b=c");
    expect(unescapeSaslName("a=2c")).toBe("a,");
    expect(unescapeSaslName("a=41")).toBeNull();
  });
});

describe("decoy credentials", () => {
  const secret = new TextEncoder().encode("server decoy secret");

  test("deterministic per username, distinct across usernames and secrets", () => {
    const a1 = decoyCredentials(secret, "ghost");
    expect(decoyCredentials(secret, "ghost")).toEqual(a1);
    expect(decoyCredentials(secret, "ghost2").salt).not.toBe(a1.salt);
    expect(decoyCredentials(new TextEncoder().encode("other secret"), "ghost").salt).not.toBe(a1.salt);
  });

  test("same shape as a real user's", async () => {
    const real = await deriveScramCredentials("pw");
    const decoy = decoyCredentials(secret, "ghost");
    expect(decoy.iterations).toBe(real.iterations);
    expect(decoy.salt.length).toBe(real.salt.length);
    expect(Buffer.from(decoy.salt, "base64").length).toBe(16);
    expect(decoyCredentials(secret, "ghost", 10000).iterations).toBe(10000);
  });
});

describe("client-side checks", () => {
  const base = { password: "pencil", clientFirstBare: "n=user,r=abc", clientNonce: "abc" };

  test.each([
    ["server nonce not extending ours", "r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /nonce/],
    ["server nonce equal to ours", "r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /nonce/],
    ["too few iterations", "r=abc123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095", /at least 4096/],
    ["non-numeric iterations", "r=abc123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x", /at least 4096/],
    ["mandatory extension", "m=x,r=abc123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", /malformed/],
    ["missing salt", "r=abc123,i=4096", /malformed/],
    ["bad salt", "r=abc123,s=%%%,i=4096", /base64/],
  ])("%s throws", async (_name, serverFirst, pattern) => {
    await expect(clientFinalMessage({ ...base, serverFirst })).rejects.toThrow(pattern);
  });

  test("server-final verification", () => {
    const sig = RFC.serverFinal.slice(2);
    expect(verifyServerFinal(RFC.serverFinal, sig)).toBe(true);
    expect(verifyServerFinal("e=invalid-proof", sig)).toBe(false);
    expect(verifyServerFinal(`v=${sig.replace("6", "7")}`, sig)).toBe(false);
    expect(verifyServerFinal("v=", sig)).toBe(false);
  });
});

describe("saslPrep", () => {
  // RFC 4013 section 3 examples that do not require the prohibited-output or bidi checks.
  test.each([
    ["I\u00adX", "IX"],
    ["user", "user"],
    ["USER", "USER"],
    ["\u00aa", "a"],
    ["\u2168", "IX"],
  ])("RFC 4013 example %p -> %p", (input, output) => {
    expect(saslPrep(input)).toBe(output);
  });

  test("maps non-ASCII spaces to U+0020 and strips mapped-to-nothing characters", () => {
    expect(saslPrep("a\u00a0b\u1680c\u3000d")).toBe("a b c d");
    expect(saslPrep("pa\u200dss\ufeffword\ufe0f")).toBe("password");
    expect(saslPrep("e\u0301")).toBe("\u00e9");
  });

  test("passwords that differ only by SASLprep authenticate alike", async () => {
    const { serverFinal } = await exchange({ storedPassword: "I\u00adX\u00a0\u2168", clientPassword: "IX IX" });
    expect(serverFinal).not.toBeNull();
  });
});
