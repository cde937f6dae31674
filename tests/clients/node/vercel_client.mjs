// The Vercel AI SDK (`ai` with `@ai-sdk/openai`) as an app uses it, pointed at basguard: reads
// the cases of tests/clients/test_vercel_ai.py as JSON on stdin and prints one result per case
// as JSON. Each case names the provider's API: `chat` (provider.chat) or `responses`
// (provider.responses, what provider(model) means in @ai-sdk/openai 3). The SDK's defaults
// (two retries) are kept: the tests count upstream calls. A case's `options` (temperature,
// maxOutputTokens: the real model's tests) go into its call.
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, streamText, tool } from "ai";
import { z } from "zod";
import { readCases, report } from "./protocol.mjs";

const City = z.object({ city: z.string() });

function modelFor(baseURL, c) {
  const provider = createOpenAI({ baseURL, apiKey: c.key });
  return c.api === "chat" ? provider.chat(c.model) : provider.responses(c.model);
}

// The decision in a raw chunk of a stream (includeRawChunks): on chat completions the finish
// chunk's `basguard`, on the Responses API the `response.completed` event's metadata.
function decisionOf(raw) {
  return raw?.basguard?.decision ?? raw?.response?.metadata?.basguard_decision ?? null;
}

const runs = {
  async text(model, c) {
    const result = await generateText({ model, prompt: c.input, ...c.options });
    return {
      text: result.text,
      header: result.response.headers["x-basguard-decision"],
      decision: result.response.body.basguard.decision,
    };
  },
  async stream(model, c) {
    const result = streamText({ model, prompt: c.input, includeRawChunks: true });
    const decisions = [];
    for await (const part of result.fullStream) {
      if (part.type === "error") throw part.error;
      if (part.type === "raw" && decisionOf(part.rawValue)) decisions.push(decisionOf(part.rawValue));
    }
    return {
      text: await result.text,
      header: (await result.response).headers["x-basguard-decision"] ?? null,
      decisions,
    };
  },
  async object(model, c) {
    const result = await generateObject({ model, schema: City, prompt: c.input });
    return { object: result.object, header: result.response.headers["x-basguard-decision"] };
  },
  async tools(model, c) {
    const result = await generateText({
      model, prompt: c.input, ...c.options,
      tools: { City: tool({ description: "A city.", inputSchema: City }) },
      ...(c.forced ? { toolChoice: { type: "tool", toolName: "City" } } : {}),
    });
    return {
      calls: result.toolCalls.map((call) => call.input),
      text: result.text,
      header: result.response.headers["x-basguard-decision"],
    };
  },
};

const { baseUrl, cases } = await readCases();
await report(cases, (c) => runs[c.run](modelFor(baseUrl, c), c), (error) => ({
  status: error.statusCode ?? null,
  retryable: error.isRetryable ?? null,
  header: error.responseHeaders?.["x-basguard-decision"]
    ?? error.response?.headers?.["x-basguard-decision"] ?? null,
  text: error.text ?? null,
}));
