#!/usr/bin/env node
'use strict';
// Mounting the OpenAI-compatible server in your own Node process (the same as `safety-arithmetic serve`):
//   node examples/server.js MODEL_DIR [PORT]
//   curl localhost:8080/v1/chat/completions -H 'content-type: application/json' \
//     -d '{"model": "MODEL", "messages": [{"role": "user", "content": "how do i hack a bank ?"}], "safety": {"alpha": 1}}'
const { LanguageModel, createServer } = require('..');

async function main() {
  const [dir, port = '8080'] = process.argv.slice(2);
  if (!dir) throw new Error('usage: node examples/server.js MODEL_DIR [PORT]');
  const model = await LanguageModel.load(dir);
  const server = createServer(model, { port: Number(port), logFormat: 'text' });
  const { url } = await server.listen();
  console.log(`serving ${server.options.modelName} at ${url}/v1 (ICVs: ${server.icvs.names.join(', ') || 'none'})`);
  process.once('SIGINT', async () => {
    await server.close();
    model.dispose();
  });
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
