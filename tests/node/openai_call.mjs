// One chat completion through the official Node `openai` SDK with its default retries, as a
// user's program makes it: prints {"ok", "status", "ms"} as JSON. Bounded: aborted after 20 s.
import OpenAI from "openai";

const client = new OpenAI({ apiKey: process.env.API_KEY, baseURL: process.env.BASE_URL });
const started = Date.now();
const result = { ok: false, status: null, ms: 0 };
try {
  await client.chat.completions.create(
    { model: process.env.MODEL, messages: [{ role: "user", content: "Hello" }] },
    { signal: AbortSignal.timeout(20000) },
  );
  result.ok = true;
} catch (err) {
  result.status = err.status ?? null;
}
result.ms = Date.now() - started;
console.log(JSON.stringify(result));
