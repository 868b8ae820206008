#!/usr/bin/env node
'use strict';
// A small HTTP server that generates with Safety Alignment on, per request:
//   node examples/server.js MODEL_DIR [PORT]
//   curl -N 'localhost:8080/generate?prompt=how%20do%20i%20hack%20a%20bank%20%3F&alpha=1'
// Concurrent requests share the engine's steps (continuous batching); each request may set its own
// alpha (0 turns steering off) and sampling. Tokens stream back as they are generated.
const http = require('node:http');
const path = require('node:path');
const { LanguageModel, loadIcv, steerWithIcv, ICV_FILE } = require('..');

async function main() {
  const dir = process.argv[2];
  const port = Number(process.argv[3] || 8080);
  if (!dir) throw new Error('usage: node examples/server.js MODEL_DIR [PORT]');
  const model = await LanguageModel.load(dir);
  let icv = null;
  try {
    icv = loadIcv(path.join(dir, ICV_FILE));
  } catch {
    console.log(`no ${ICV_FILE} in ${dir}: steering is off`);
  }
  const vectors = new Map(); // alpha -> steering request (the vector is registered once per alpha)
  const steerFor = (alpha) => {
    if (!icv || alpha === 0) return [];
    if (!vectors.has(alpha)) vectors.set(alpha, steerWithIcv(model, icv, alpha));
    return [vectors.get(alpha)];
  };
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname !== '/generate') return res.writeHead(404).end('try /generate?prompt=...\n');
    const prompt = url.searchParams.get('prompt');
    if (!prompt) return res.writeHead(400).end('prompt is required\n');
    const alpha = url.searchParams.has('alpha') ? Number(url.searchParams.get('alpha')) : icv ? icv.defaultAlpha : 0;
    const temperature = Number(url.searchParams.get('temperature') || 0);
    const controller = new AbortController();
    res.on('close', () => controller.abort());
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    let printed = '';
    try {
      for await (const { text } of model.generate(prompt, {
        chat: true, maxNewTokens: Number(url.searchParams.get('max') || 128), steer: steerFor(alpha),
        ...(temperature > 0 ? { temperature, seed: Number(url.searchParams.get('seed') || 0) } : {}), signal: controller.signal,
      })) {
        res.write(text.slice(printed.length));
        printed = text;
      }
      res.end('\n');
    } catch (err) {
      if (err.code !== 'ABORT_ERR') res.end(`\nerror: ${err.message}\n`);
    }
  });
  server.listen(port, () => console.log(`listening on http://localhost:${port} (${model.backend}); steering ${icv ? `with ${ICV_FILE}, default alpha ${icv.defaultAlpha}` : 'off'}`));
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
