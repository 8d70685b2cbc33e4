// Generates the golden bodies of the JSON envelope marshaler with JavaScript's
// own JSON.stringify, as a TypeScript peer (createRedisEventTarget) would
// publish them: JSON.stringify({type, id, payload, uuid, metadata}) with an
// undefined id when the topic has none.
//
// Run from this directory: node gen.js
// Every case here has a twin of the same name in marshaler_envelope_test.go
// (envelopeGoldenCases) that builds the same event as a Watermill message.
'use strict';
const fs = require('fs');

const cases = {
  with_id: {
    type: 'call.responded', id: 'uuid-123',
    payload: { result: { ok: true, n: 42 } },
    uuid: '8c0b6f4e-1d2a-4c5b-9e7f-0a1b2c3d4e5f', metadata: { k: 'v' },
  },
  without_id: {
    type: 'user.created', id: undefined,
    payload: { name: 'Ada' }, uuid: 'u-1',
  },
  empty_payload: {
    type: 'ping', id: '1', payload: null, uuid: 'u-2',
  },
  metadata_sorted: {
    type: 'order.placed', id: '42',
    payload: [1, 2.5, 'x', null, false], uuid: 'u-3',
    metadata: { a: 'first', m: '', z: 'last' },
  },
  unicode: {
    type: 'événement', id: '日本:語',
    payload: { msg: 'héllo 🌍', ls: 'a\u2028b' }, uuid: 'u-4',
    metadata: { emoji: '😀', sep: 'x\u2029y' },
  },
  html_chars: {
    type: 'a<b', id: 'x&y>z',
    payload: { h: '<b>&amp;</b>' }, uuid: 'u-5',
    metadata: { 'a<b': 'c>d', html: "<script>alert('&')</script>" },
  },
  control_chars: {
    type: 'ctl', id: undefined,
    payload: { s: '\u0000\b\t\n\f\r\u001f"\\/' }, uuid: 'u-6',
    metadata: { ctl: '\u0000\u0001\b\t\n\u000b\f\r\u001f"\\/\u007f' },
  },
  ts_peer: {
    type: 'call.responded', id: 'abc', payload: { x: 1 },
  },
  whitespace_payload: {
    type: 'w', id: 'x y', payload: { a: [1, 2], b: 'x y' }, uuid: 'u-7',
  },
  bare: {
    type: 'tick', id: undefined, payload: null,
  },
};

for (const [name, c] of Object.entries(cases)) {
  const body = JSON.stringify({
    type: c.type, id: c.id, payload: c.payload, uuid: c.uuid, metadata: c.metadata,
  });
  fs.writeFileSync(`${name}.json`, body);
  console.log(`${name}.json: ${body}`);
}
