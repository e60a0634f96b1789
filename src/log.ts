import { writeSync } from "node:fs";

/** Structured logs, as text or JSON lines, to stderr. Never log a full secret. */
export type LogFields = Record<string, unknown>;

export interface Logger {
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

export function createLogger(format: "text" | "json", write: (line: string) => void = (l) => void writeSync(2, l)): Logger {
  const emit = (level: string, message: string, fields: LogFields = {}) => {
    const time = new Date().toISOString();
    if (format === "json") {
      write(JSON.stringify({ time, level, msg: message, ...fields }) + "\n");
      return;
    }
    const rest = Object.entries(fields)
      .map(([k, v]) => `${k}=${typeof v === "string" && !/[\s"]/.test(v) ? v : JSON.stringify(v)}`)
      .join(" ");
    write(`${time} ${level.toUpperCase().padEnd(5)} ${message}${rest ? " " + rest : ""}\n`);
  };
  return {
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
