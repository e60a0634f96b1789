/**
 * The licensing calls' field parsing: `queryFields` (the query string of `GET /api/check`, read
 * outside Elysia) and `quickWire` (the hand-written common case of the wire schema) must give
 * exactly the answers the schema gives. Checked here over a large generated set of field
 * combinations, the awkward values included.
 */
import { describe, expect, test } from "bun:test";
import { AppError } from "../src/core/errors.ts";
import { parseWire, queryFields, quickQuery, quickWire } from "../src/http/licensing-api.ts";

/** The schema's own answer: a body (even an empty one) takes the merging path through valibot. */
function bySchema(fields: Record<string, unknown>) {
  try {
    return { ok: parseWire(fields, {}) };
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    return { error: { message: error.message, field: error.field, status: error.status } };
  }
}

function byQuery(fields: Record<string, unknown>) {
  try {
    return { ok: parseWire(fields, undefined) };
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    return { error: { message: error.message, field: error.field, status: error.status } };
  }
}

/** Drops keys whose value is undefined: the schema leaves absent optional fields out. */
function defined(request: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(request).filter(([, value]) => value !== undefined));
}

const TEXT_VALUES: unknown[] = [
  undefined,
  "",
  " ",
  "hw-1",
  "  padded  ",
  "ICEBREAKER",
  "ü-ß-漢字-🔑",
  "x".repeat(128),
  "x".repeat(129),
  "x".repeat(255),
  "x".repeat(256),
  ["a", "b"],
  7,
  null,
  { nested: true },
];
const TOKEN_VALUES: unknown[] = [
  undefined,
  "",
  "   ",
  "abcde12345abcde12345abcde",
  " ABCDE12345ABCDE12345ABCDE ",
  "A".repeat(128),
  "A".repeat(129),
  ` ${"a".repeat(128)} `,
  ["T", "T"],
  12345,
  null,
];
const APP_IDS: unknown[] = [
  undefined,
  "",
  "1",
  "42",
  "0",
  "-1",
  "01",
  "1.5",
  "1e3",
  "abc",
  " 1",
  "9".repeat(15),
  "9".repeat(16),
  3,
  0,
  ["1", "2"],
];

/** The generators' fixed seeds: the same cases every run, so that a failure (which names its case) reproduces. */
const FIELDS_SEED = 12345;
const QUERY_SEED = 777;
const FIELD_SETS = 20_000;
const QUERIES = 20_000;

/** Pseudo-random field combinations (a linear congruential generator from `seed`). */
function* cases(count: number, seed: number): Generator<Record<string, unknown>> {
  const pick = <T>(values: T[]): T => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return values[seed % values.length]!;
  };
  for (let i = 0; i < count; i++) {
    const fields: Record<string, unknown> = {};
    for (const [name, values] of [
      ["token", TOKEN_VALUES],
      ["app_id", APP_IDS],
      ["machine", TEXT_VALUES],
      ["user", TEXT_VALUES],
      ["hwid", TEXT_VALUES],
      ["nonce", TEXT_VALUES],
    ] as const) {
      const value = pick(values as unknown[]);
      if (value !== undefined) fields[name] = value;
    }
    if (i % 7 === 0) fields.os = "linux";
    yield fields;
  }
}

describe(`fuzz: quickWire agrees with the wire schema on ${FIELD_SETS} generated field combinations (seed ${FIELDS_SEED})`, () => {
  const all = [...cases(FIELD_SETS, FIELDS_SEED)];

  test("whatever it accepts, the schema accepts with the same result", () => {
    let accepted = 0;
    for (const fields of all) {
      const quick = quickWire(fields);
      if (quick === null) continue;
      accepted++;
      const schema = bySchema(fields);
      expect({ fields, result: defined(quick) }).toEqual({ fields, result: defined(schema.ok ?? {}) });
    }
    // The generator reaches both sides: a few hundred accepted, most refused.
    expect(accepted).toBeGreaterThan(200);
    expect(accepted).toBeLessThan(all.length);
  });

  test("a query parsed with or without the quick path gives the same answer or the same error", () => {
    for (const fields of all) {
      const schema = bySchema(fields);
      const query = byQuery(fields);
      expect({ fields, answer: query.ok ? defined(query.ok) : query.error }).toEqual({
        fields,
        answer: schema.ok ? defined(schema.ok) : schema.error,
      });
    }
  });
});

describe("queryFields", () => {
  const base = "http://127.0.0.1:1/api/check";

  test("plain fields; `+` and percent-encoding decoded; a fragment ignored", () => {
    expect({ ...queryFields(`${base}?token=ABC&hwid=my+machine&user=s%C3%A5m%2B1&machine=a%20b#frag`) }).toEqual({
      token: "ABC",
      hwid: "my machine",
      user: "såm+1",
      machine: "a b",
    });
  });

  test("no query, empty parts, a field without '=' and an empty value", () => {
    expect({ ...queryFields(base) }).toEqual({});
    expect({ ...queryFields(`${base}?`) }).toEqual({});
    expect({ ...queryFields(`${base}?&&token=A&&flag&empty=`) }).toEqual({ token: "A", flag: "", empty: "" });
  });

  test("a field given twice or more becomes a list (which the schema refuses by name)", () => {
    expect({ ...queryFields(`${base}?hwid=a&hwid=b&hwid=c&token=T`) }).toEqual({ hwid: ["a", "b", "c"], token: "T" });
    expect(byQuery({ ...queryFields(`${base}?hwid=a&hwid=b&token=T`) }).error).toEqual({
      message: "hwid must be a string",
      field: "hwid",
      status: 400,
    });
  });

  test("names like __proto__ are plain fields, not the object's prototype", () => {
    const fields = queryFields(`${base}?__proto__=x&constructor=y&token=T&hwid=h`);
    expect(Object.getPrototypeOf(fields)).toBeNull();
    expect(fields.__proto__).toBe("x");
    expect(byQuery(fields).ok).toEqual({ token: "T", hwid: "h" });
  });

  test("broken percent-encoding is refused, naming the field", () => {
    const refused = (url: string) => {
      try {
        queryFields(url);
      } catch (error) {
        return { message: (error as AppError).message, field: (error as AppError).field, status: (error as AppError).status };
      }
      return null;
    };
    expect(refused(`${base}?token=T&hwid=%E0%A4%A`)).toEqual({ message: "hwid is not valid URL encoding", field: "hwid", status: 400 });
    expect(refused(`${base}?token=%ZZ`)).toEqual({ message: "token is not valid URL encoding", field: "token", status: 400 });
    expect(refused(`${base}?%ZZ=1`)).toEqual({
      message: "the query string has a field name that is not valid URL encoding",
      field: "query",
      status: 400,
    });
  });
});

test("a __proto__ field in a JSON body or a repeated query field cannot replace the merged object's prototype", () => {
  const body = JSON.parse('{"__proto__": {"token": "INHERITED", "hwid": "h"}, "hwid": "own"}');
  expect(bySchema(body).error).toEqual({ message: "token is required", field: "token", status: 400 });
  expect(byQuery({ ...queryFields("http://x/api/check?__proto__=a&__proto__=b&hwid=h") }).error).toEqual({
    message: "token is required",
    field: "token",
    status: 400,
  });
});

describe("quickQuery agrees with queryFields and the schema", () => {
  const PARTS = [
    "token=abcde12345abcde12345abcde",
    "token=ABCDE12345ABCDE12345ABCDE",
    "token=",
    "token",
    "token=%41BC",
    "token=A+B",
    `token=${"A".repeat(129)}`,
    "hwid=hw-1",
    "hwid=hw-2",
    "hwid=",
    "hwid",
    "hwid=my+machine",
    "hwid=%E0%A4%A",
    `hwid=${"h".repeat(256)}`,
    "machine=ICEBREAKER",
    "user=sam",
    "nonce=n-1",
    "app_id=1",
    "app_id=0",
    "app_id=abc",
    "app_id=",
    "%74oken=ABC",
    "os=linux",
    "flag",
    "",
    "=x",
    "a=b=c",
  ];

  /** Pseudo-random query strings from PARTS (a linear congruential generator from `seed`). */
  function* urls(count: number, seed: number): Generator<string> {
    const next = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    for (let i = 0; i < count; i++) {
      // Every other query from the parts that need no decoding, so that both paths are exercised.
      const pool = i % 2 === 0 ? PARTS : PARTS.filter((p) => !/[%+]/.test(p));
      const parts = Array.from({ length: 1 + (next() % 6) }, () => pool[next() % pool.length]!);
      yield `http://127.0.0.1:9000/api/check?${parts.join("&")}`;
    }
  }

  test(`fuzz: the same answer or the same error for ${QUERIES} generated query strings (seed ${QUERY_SEED})`, () => {
    let quick = 0;
    for (const url of urls(QUERIES, QUERY_SEED)) {
      let general: { ok: Record<string, unknown> } | { error: string; field: string | undefined };
      try {
        general = { ok: defined(parseWire(queryFields(url), undefined)) };
      } catch (error) {
        if (!(error instanceof AppError)) throw error;
        general = { error: error.message, field: error.field };
      }
      const fast = quickQuery(url);
      if (fast === null) continue;
      quick++;
      expect({ url, answer: { ok: defined(fast) } as typeof general }).toEqual({ url, answer: general });
    }
    expect(quick).toBeGreaterThan(200);
  });

  test("neither hwid nor machine is well-formed on both paths (a failed check; activate and deactivate refuse it in core)", () => {
    const base = "http://x/api/check";
    for (const query of ["token=T", "token=T&app_id=7&user=sam", "token=T&hwid=&machine="]) {
      const url = `${base}?${query}`;
      const expected = { token: "T", ...(query.includes("app_id") ? { app_id: 7, user: "sam" } : {}) };
      expect({
        url,
        quick: defined(quickQuery(url) ?? {}),
        general: defined(parseWire(queryFields(url), undefined)),
        body: defined(parseWire({}, { ...queryFields(url) })),
      }).toEqual({
        url,
        quick: expected,
        general: expected,
        body: expected,
      });
    }
  });

  test("anything encoded, repeated or without a query goes to the general path", () => {
    const base = "http://x/api/check";
    expect(quickQuery(`${base}?token=T&hwid=h`)).toEqual({ token: "T", hwid: "h" });
    for (const url of [
      base,
      `${base}?token=T&hwid=h%20i`,
      `${base}?token=T&hwid=h+i`,
      `${base}?token=T&hwid=a&hwid=b`,
      `${base}?token&hwid=h`,
      `${base}?token=T&hwid=h#x`,
    ]) {
      expect({ url, quick: quickQuery(url) }).toEqual({ url, quick: null });
    }
  });
});
