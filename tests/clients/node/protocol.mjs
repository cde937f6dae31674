// How a client program talks to its test (tests/clients/environments.py): the cases arrive
// as JSON on stdin, {"base_url", "cases": [{"name", "run", "key", "input", ...}]}, and one
// result per case leaves as JSON on stdout: {"value": ...} or {"error": {"type", "name",
// "message", ...}}. A case that throws is a result too: what the app would have caught.
import { text } from "node:stream/consumers";

export async function readCases() {
  const spec = JSON.parse(await text(process.stdin));
  return { baseUrl: spec.base_url, cases: spec.cases };
}

export async function report(cases, run, describeError) {
  const results = {};
  for (const c of cases) {
    try {
      results[c.name] = { value: await run(c) };
    } catch (error) {
      results[c.name] = {
        error: {
          type: error?.constructor?.name ?? typeof error,
          name: error?.name ?? null,
          message: String(error?.message ?? error),
          ...describeError(error),
        },
      };
    }
  }
  process.stdout.write(JSON.stringify(results));
}
