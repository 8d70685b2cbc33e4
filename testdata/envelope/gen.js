// Generates the golden bodies of the JSON envelope marshaler with JavaScript's
// own JSON.stringify, as a TypeScript peer (createRedisEventTarget) would
// publish them: JSON.stringify({type, id, payload, uuid, metadata}) with an
// undefined id when the topic has none. A payload that is not JSON (a case
// with `bytes`) travels as Node's base64 of the bytes, followed by
// payload_encoding: 'base64'; for the others payload_encoding is undefined,
// which JSON.stringify drops.
//
// Run from this directory: node gen.js
// Every case here has a twin of the same name in marshaler_envelope_test.go
// (envelopeGoldenCases) that builds the same event as a Watermill message.
'use strict';
const fs = require('fs');

// The channel checksum of a Go Publisher's sequence stamp (rps_ch): 32-bit
// FNV-1a of the channel's UTF-8 bytes, as 8 lowercase hex digits.
function channelChecksum(channel) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(channel, 'utf8')) {
    h = Math.imul(h ^ b, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

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
  // The payload of Watermill's universal tests: text, not JSON.
  base64_text: {
    type: 'text.sent', id: '1', bytes: Buffer.from('x'), uuid: 'u-8',
  },
  // Bytes that are not UTF-8, whose base64 uses '+' and '/'.
  base64_binary: {
    type: 'file.uploaded', id: undefined,
    bytes: Buffer.from([0x00, 0x01, 0x02, 0xfb, 0xff, 0xbf, 0x80]), uuid: 'u-9',
    metadata: { k: 'v' },
  },
  // JSON-shaped, but not UTF-8: "\xff".
  base64_invalid_utf8: {
    type: 'a', id: 'b', bytes: Buffer.from([0x22, 0xff, 0x22]), uuid: 'u-10',
  },
  // Whitespace alone is no JSON value.
  base64_whitespace: {
    type: 'w', id: undefined, bytes: Buffer.from(' \n'),
  },
  // What a Go Publisher sends on the channel "app:call.responded:uuid-123"
  // (ChannelPrefix "app:"): the sequence stamp in the metadata, its keys
  // sorted with the others.
  stamped: {
    type: 'call.responded', id: 'uuid-123', payload: { ok: true }, uuid: 'u-11',
    metadata: {
      k: 'v',
      rps_ch: channelChecksum('app:call.responded:uuid-123'),
      rps_pub: 'dP6DdXXZR6ya6JcxqLn54V',
      rps_seq: '7',
      rps_since: '1796055553462',
    },
  },
  // What a Go Publisher with a History sends: the history script writes
  // the history's epoch and the message's offset into the metadata
  // (rps_epoch, rps_offset), sorted with the others; the offset numbers
  // the message, so there is no sequence stamp.
  history: {
    type: 'call.responded', id: 'uuid-123', payload: { ok: true }, uuid: 'u-11',
    metadata: { k: 'v', rps_epoch: '3f2kq9x1', rps_offset: '42', z: 'last' },
  },
};

for (const [name, c] of Object.entries(cases)) {
  const base64 = c.bytes !== undefined;
  const body = JSON.stringify({
    type: c.type, id: c.id,
    payload: base64 ? c.bytes.toString('base64') : c.payload,
    payload_encoding: base64 ? 'base64' : undefined,
    uuid: c.uuid, metadata: c.metadata,
  });
  fs.writeFileSync(`${name}.json`, body);
  console.log(`${name}.json: ${body}`);
}
