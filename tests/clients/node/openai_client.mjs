// The openai npm SDK as an app uses it, pointed at basguard: reads the cases of
// tests/clients/test_openai_node.py as JSON on stdin and prints one result per case as JSON.
// The SDK's own defaults (retries included) are kept: the tests count upstream calls. A case's
// `options` (temperature, max_tokens: the real model's tests) go into its request.
import OpenAI from "openai";
import { zodResponseFormat, zodTextFormat } from "openai/helpers/zod";
import { z } from "zod";
import { readCases, report } from "./protocol.mjs";

const City = z.object({ city: z.string() });
const cityTool = {
  type: "function",
  function: {
    name: "City",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

function clientFor(baseURL, key) {
  return new OpenAI({ baseURL, apiKey: key, timeout: 60_000 });
}

const user = (text) => [{ role: "user", content: text }];

const runs = {
  async chat(client, c) {
    // The decision: the response headers (withResponse), the body's `basguard`, the request id.
    const { data, response } = await client.chat.completions
      .create({ model: c.model, messages: user(c.input), ...c.options })
      .withResponse();
    const message = data.choices[0].message;
    return {
      content: message.content,
      refusal: message.refusal,
      header: response.headers.get("x-basguard-decision"),
      decision: data.basguard.decision,
      requestId: data._request_id,
      id: data.basguard.id,
    };
  },
  async stream(client, c) {
    const stream = await client.chat.completions.create({
      model: c.model, messages: user(c.input), stream: true, ...c.options,
    });
    let content = "";
    let decision = null;
    for await (const chunk of stream) {
      content += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.basguard) decision = chunk.basguard.decision; // on the finish chunk
    }
    return { content, decision };
  },
  async parse(client, c) {
    const completion = await client.chat.completions.parse({
      model: c.model, messages: user(c.input), response_format: zodResponseFormat(City, "City"),
    });
    const message = completion.choices[0].message;
    return { parsed: message.parsed, refusal: message.refusal, content: message.content,
      decision: completion.basguard.decision };
  },
  async streamHelper(client, c) {
    const stream = client.chat.completions.stream({
      model: c.model, messages: user(c.input), response_format: zodResponseFormat(City, "City"),
    });
    // The helper's typed events are emitted to listeners; iterating it yields the chunks.
    const kinds = new Set();
    for (const kind of ["content.delta", "content.done", "refusal.delta", "refusal.done"]) {
      stream.on(kind, () => kinds.add(kind));
    }
    const message = (await stream.finalChatCompletion()).choices[0].message;
    return { parsed: message.parsed, refusal: message.refusal, events: [...kinds] };
  },
  async tools(client, c) {
    const { data, response } = await client.chat.completions
      .create({
        model: c.model, messages: user(c.input), tools: [cityTool], ...c.options,
        ...(c.forced ? { tool_choice: { type: "function", function: { name: "City" } } } : {}),
      })
      .withResponse();
    const message = data.choices[0].message;
    return {
      calls: (message.tool_calls ?? []).map((call) => call.function.arguments),
      refusal: message.refusal,
      content: message.content,
      header: response.headers.get("x-basguard-decision"),
    };
  },
  async responses(client, c) {
    const response = await client.responses.create({ model: c.model, input: c.input });
    return { text: response.output_text, metadata: response.metadata };
  },
  async responsesStream(client, c) {
    // The helper rejects event types it does not know: it must run to the end.
    const stream = client.responses.stream({
      model: c.model, input: c.input,
      ...(c.schema ? { text: { format: zodTextFormat(City, "City") } } : {}),
    });
    const kinds = [];
    for await (const event of stream) kinds.push(event.type);
    const response = await stream.finalResponse();
    return {
      text: response.output_text, parsed: response.output_parsed ?? null,
      metadata: response.metadata, last: kinds.at(-1),
      parts: response.output.flatMap((item) => (item.content ?? []).map((p) => p.type)),
    };
  },
  async responsesParse(client, c) {
    const response = await client.responses.parse({
      model: c.model, input: c.input, text: { format: zodTextFormat(City, "City") },
    });
    return {
      parsed: response.output_parsed, metadata: response.metadata,
      parts: response.output.flatMap((item) => (item.content ?? []).map((p) => p.type)),
    };
  },
};

const { baseUrl, cases } = await readCases();
await report(cases, (c) => runs[c.run](clientFor(baseUrl, c.key), c), (error) => ({
  status: error.status ?? null,
  code: error.code ?? null,
  header: error.headers?.get?.("x-basguard-decision") ?? null,
}));
