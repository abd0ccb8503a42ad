/**
 * The return-path messages (QEMU's `be16 type, be16 len, data`): golden
 * bytes, input split at every offset, and the format errors.
 */
import t from 'tap';
import { encodeReturnPathMessage, MIG_RP_MSG_SHUT, MIG_RP_MSG_SWITCHOVER_ACK, ReturnPathParser, type ReturnPathMessage } from '../lib/migration/return-path.js';
import { concatBytes } from './helpers/migration-streams.js';
import { bytesOf, hexOf, toHex } from './helpers/uapi-hex.js';

t.test('golden bytes', async (t) => {
  t.equal(MIG_RP_MSG_SHUT, 1);
  t.equal(MIG_RP_MSG_SWITCHOVER_ACK, 7);
  t.equal(toHex(encodeReturnPathMessage({ type: 'switchover-ack' })), hexOf('0007', '0000'));
  t.equal(toHex(encodeReturnPathMessage({ type: 'shut', status: 0 })), hexOf('0001', '0004', '00000000'));
  t.equal(toHex(encodeReturnPathMessage({ type: 'shut', status: 0xdeadbeef })), hexOf('0001', '0004', 'deadbeef'));
  t.throws(() => encodeReturnPathMessage({ type: 'shut', status: -1 }), { code: 'ERR_VFIO_INVALID_ARGUMENT' });
});

t.test('parsing, split anywhere', async (t) => {
  const messages: ReturnPathMessage[] = [{ type: 'switchover-ack' }, { type: 'shut', status: 1 }, { type: 'switchover-ack' }];
  const bytes = concatBytes(messages.map(encodeReturnPathMessage));
  for (let a = 0; a <= bytes.length; a++) {
    for (let b = a; b <= bytes.length; b++) {
      const p = new ReturnPathParser();
      const got = [...p.push(bytes.subarray(0, a)), ...p.push(bytes.subarray(a, b)), ...p.push(bytes.subarray(b))];
      p.end();
      if (JSON.stringify(got) !== JSON.stringify(messages)) {
        t.fail(`split at ${a}, ${b}`);
        return;
      }
    }
  }
  t.pass('every pair of split points gives the same messages');
});

t.test('format errors', async (t) => {
  const errorOf = (bytes: Uint8Array): unknown => {
    const p = new ReturnPathParser();
    try {
      p.push(bytes);
      p.end();
    } catch (e) {
      t.throws(() => p.push(new Uint8Array(1)), 'and again after');
      return e;
    }
    return undefined;
  };
  t.match(errorOf(bytesOf('0002', '0000')), { code: 'ERR_VFIO_STREAM_FORMAT', message: /type 2 is not supported/, offset: 0 });
  t.match(errorOf(bytesOf('0007', '0001', '00')), { message: /carries 1 bytes, not 0/, offset: 2 });
  t.match(errorOf(bytesOf('0001', '0008', '0000000000000000')), { message: /carries 8 bytes, not 4/ });
  t.match(errorOf(bytesOf('0001', '0004', '0000')), { message: /truncated/, offset: 6 });
  t.match(errorOf(bytesOf('00')), { message: /truncated/ });
  t.equal(errorOf(new Uint8Array(0)), undefined, 'nothing is fine');
});
