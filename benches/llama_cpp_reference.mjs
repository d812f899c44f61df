// Reference numbers for benches/engine_speed.rs: llama.cpp (prebuilt, from npm node-llama-cpp) on
// the same GGUF, same prompt, same thread count. Prints one JSON line.
// Usage: node llama_cpp_reference.mjs MODEL.gguf PROMPT_FILE THREADS NEW_TOKENS
import { readFileSync } from "node:fs";
import { getLlama } from "node-llama-cpp";

const [modelPath, promptFile, threads, newTokens] = process.argv.slice(2);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ contextSize: 4096, threads: Number(threads), batchSize: 512 });
const sequence = context.getSequence();
const tokens = model.tokenize(readFileSync(promptFile, "utf8"));

const start = performance.now();
let first = null;
let count = 0;
for await (const _token of sequence.evaluate(tokens, { temperature: 0 })) {
  if (first === null) first = performance.now();
  if (++count > Number(newTokens)) break;
}
const end = performance.now();
console.log(JSON.stringify({
  prompt_tokens: tokens.length,
  prefill_tok_s: tokens.length / ((first - start) / 1000),
  decode_tok_s: (count - 1) / ((end - first) / 1000),
}));
