#!/usr/bin/env node
// Writes tests/fixtures/kinds.jsonl: Jetstream v1 event lines (the replay server's input) of
// every kind the v2 wire carries, made the way real writers make them, so that the replay
// server's frames can be checked against the Jetstream lexicon (validate-frames.js):
// records' CIDs are the CIDs of their DAG-CBOR, manifests have TID record keys and tags point
// at them by at-uri, the #sync event carries a CAR with a signed commit.
//   node tests/interop/make-kinds-fixture.js > tests/fixtures/kinds.jsonl
// The output is deterministic (fixed key, fixed times), so the committed file can be remade.
'use strict'
const { cidForCbor, cborEncode } = require('@atproto/common')
const { BlockMap, blocksToCarFile, signCommit } = require('@atproto/repo')
const { Secp256k1Keypair } = require('@atproto/crypto')

const B32 = '234567abcdefghijklmnopqrstuvwxyz'
function tid(us, clock = 7) {
  let v = (BigInt(us) << 10n) | BigInt(clock)
  let s = ''
  for (let i = 0; i < 13; i++) {
    s = B32[Number(v & 31n)] + s
    v >>= 5n
  }
  return s
}
const iso = (us) => new Date(Math.floor(us / 1000)).toISOString()

const alice = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'
const bob = 'did:plc:ragtjsm2j2vknwkz3zp4oxrd'
const carol = 'did:plc:z72i7hdynmk6r22z27h6tvur'
const other = 'did:plc:vwzwgnygau7ed7b7wt5ux7y2'
const digest = 'sha256:' + 'c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2'

async function main() {
  const key = await Secp256k1Keypair.import(
    '9085d2bef69286a6cbb51623c8fa258629945cd55ca705cc4e66700396894e0c',
  )
  let t = 1755000000000000
  let relaySeq = 8800000
  const lines = []
  const at = () => (t += 1713)

  async function commit(did, operation, collection, rkey, record) {
    const us = at()
    const c = { rev: tid(us), operation, collection, rkey }
    if (record) {
      c.record = record
      c.cid = (await cidForCbor(record)).toString()
    }
    lines.push({ did, time_us: us, kind: 'commit', commit: c })
    return c
  }
  function upstream(did, kind, fields) {
    const us = at()
    lines.push({ did, time_us: us, kind, [kind]: { did, seq: ++relaySeq, time: iso(us), ...fields } })
  }

  const mRkey = tid(t + 1)
  const manifest = {
    $type: 'io.atcr.manifest', repository: 'tools/cli', digest,
    mediaType: 'application/vnd.oci.image.manifest.v1+json', schemaVersion: 2,
    holdDid: 'did:web:hold01.atcr.io',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', size: 1469, digest },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', size: 3623807, digest }],
    createdAt: '2025-08-12T12:00:00.123Z',
  }
  await commit(alice, 'create', 'io.atcr.manifest', mRkey, manifest)
  const tag = (name, created) => ({
    $type: 'io.atcr.tag', repository: 'tools/cli', tag: name,
    manifest: `at://${alice}/io.atcr.manifest/${mRkey}`, manifestDigest: digest, createdAt: created,
  })
  await commit(alice, 'create', 'io.atcr.tag', 'tools-cli_latest', tag('latest', '2025-08-12T12:00:01Z'))
  await commit(other, 'create', 'app.bsky.feed.post', tid(t + 5), {
    $type: 'app.bsky.feed.post', text: 'a new image, with a "quoted" seq: 1', langs: ['en'],
    createdAt: '2025-08-12T12:00:02.000Z',
  })
  upstream(alice, 'identity', { handle: 'alice.atcr.test' })
  await commit(alice, 'create', 'io.atcr.tag', 'tools-cli_v1', tag('v1', '2025-08-12T12:00:03.5+01:00'))
  await commit(alice, 'delete', 'io.atcr.tag', 'tools-cli_v1')
  upstream(bob, 'account', { active: false, status: 'deactivated' })
  await commit(bob, 'create', 'io.atcr.hold.stats', 'tcuimfhsbgqyjh3pkxvxyfh47a', {
    $type: 'io.atcr.hold.stats', did: alice, repository: 'tools/cli', pullCount: 12,
    pushCount: 3, updatedAt: '2025-08-12T12:00:04Z',
  })
  // A #sync: the repo's new head, a signed commit in a CAR of its own.
  const us = t + 1713
  const unsigned = { did: alice, version: 3, data: await cidForCbor({ e: [], l: null }), rev: tid(us), prev: null }
  const signed = await signCommit(unsigned, key)
  const bytes = cborEncode(signed)
  const root = await cidForCbor(signed)
  const blocks = new BlockMap()
  blocks.set(root, bytes)
  const car = await blocksToCarFile(root, blocks)
  upstream(alice, 'sync', { blocks: { $bytes: Buffer.from(car).toString('base64').replace(/=+$/, '') }, rev: tid(us) })
  upstream(bob, 'account', { active: true })
  await commit(other, 'create', 'app.bsky.feed.like', tid(t + 9), {
    $type: 'app.bsky.feed.like', createdAt: '2025-08-12T12:00:05.000Z',
    subject: { uri: `at://${alice}/app.bsky.feed.post/${tid(t - 99999)}`, cid: root.toString() },
  })
  upstream(carol, 'account', { active: false, status: 'deleted' })
  await commit(alice, 'update', 'io.atcr.tag', 'tools-cli_latest', tag('latest', '2025-08-12T12:00:06Z'))
  process.stdout.write(lines.map((l) => JSON.stringify(l)).join('\n') + '\n')
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
