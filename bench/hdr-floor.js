'use strict';
// The floor of bench/hdr.js: reads base, harmful and target and writes an output of the target's
// size through HDR's own native I/O path (lib/hdr.ts hdrIoFloor), computing nothing.
//   node bench/hdr-floor.js BASE HARMFUL TARGET OUT [--device cpu|cuda|auto]
const path = require('node:path');
const { hdrIoFloor } = require(path.join(__dirname, '..', 'dist', 'lib', 'hdr.js'));

const [base, harmful, target, out, ...rest] = process.argv.slice(2);
if (!out) {
  process.stderr.write('usage: node bench/hdr-floor.js BASE HARMFUL TARGET OUT [--device cpu|cuda|auto]\n');
  process.exit(2);
}
const device = rest[0] === '--device' ? rest[1] : undefined;
hdrIoFloor({ base, harmful, target, out, force: true, ...(device ? { device } : {}) }).then(
  (r) => process.stdout.write(JSON.stringify(r) + '\n'),
  (e) => {
    process.stderr.write(`${e && e.message ? e.message : e}\n`);
    process.exitCode = 1;
  },
);
