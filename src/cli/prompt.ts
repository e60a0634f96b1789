/** Reading secrets from a terminal (no echo) or from standard input. */

export async function readStdin(): Promise<string> {
  return await new Response(Bun.stdin.stream()).text();
}

/** The first line of standard input, for --password-stdin. */
export async function passwordFromStdin(): Promise<string> {
  const text = await readStdin();
  return text.replace(/\r?\n.*$/s, "");
}

/** Asks for a line on the terminal without echoing it. */
export function askHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(question);
  return new Promise((resolve, reject) => {
    let answer = "";
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding("utf8");
    const done = (error?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off("data", onData);
      process.stderr.write("\n");
      if (error) reject(error);
      else resolve(answer);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === "\r" || ch === "\n") return done();
        if (ch === "\u0003") return done(new Error("cancelled"));
        if (ch === "\u007f" || ch === "\b") answer = answer.slice(0, -1);
        else answer += ch;
      }
    };
    stdin.on("data", onData);
  });
}

/** A new password: from stdin when asked, else twice on the terminal. */
export async function newPassword(fromStdin: boolean): Promise<string> {
  if (fromStdin) return passwordFromStdin();
  if (!process.stdin.isTTY) {
    throw new Error("no terminal to ask for the password on: pipe it in with --password-stdin");
  }
  const first = await askHidden("New password: ");
  const second = await askHidden("Repeat it: ");
  if (first !== second) throw new Error("the two passwords differ; nothing was changed");
  return first;
}
