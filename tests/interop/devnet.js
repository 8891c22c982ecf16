#!/usr/bin/env node
// A real AT Protocol network for the tests: the reference PDS and a PLC directory from
// @atproto/dev-env, on loopback.
//
//   node tests/interop/devnet.js [spec.json]
//
// spec (optional): {"accounts": [{"handle": "alice.test",
//                                 "records": [{"collection", "rkey"?, "record"}]}]}
// Default: accounts alice.test and bob.test, no records.
//
// stdout: one JSON line when ready: {"pds", "plc", "accounts": [{"did", "handle"}]}, then one
// JSON line per command. Commands are JSON lines on stdin, each answered with
// {"id", "ok": true, ...} or {"id", "ok": false, "error"}:
//   {"id", "op": "create", "repo": did|handle, "collection", "rkey"?, "record"} -> uri, cid, rev
//   {"id", "op": "put",    "repo", "collection", "rkey", "record"}             -> uri, cid, rev
//   {"id", "op": "delete", "repo", "collection", "rkey"}                       -> rev
//   {"id", "op": "createMany", "repo", "writes": [{"collection", "rkey"?, "record"}]}
//        -> results: [{uri, cid}], rev   (applyWrites, 200 creates a commit, as bulk writers do)
// (rev: the commit's, as the firehose would carry it)
//   {"id", "op": "createAccount", "handle"}                                    -> did, handle
//   {"id", "op": "updateHandle", "repo", "handle"}
// Runs until stdin closes or SIGTERM/SIGINT; logs go to stderr.
'use strict'

const fs = require('fs')
const readline = require('readline')

// The PDS and its libraries log through console: keep stdout for the protocol.
console.log = (...args) => console.error(...args)
console.info = (...args) => console.error(...args)

const { TestNetworkNoAppView } = require('@atproto/dev-env')

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

async function main() {
  const spec = process.argv[2]
    ? JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
    : { accounts: [{ handle: 'alice.test' }, { handle: 'bob.test' }] }

  const net = await TestNetworkNoAppView.create({})
  const agents = new Map() // did and handle -> logged-in agent

  async function createAccount(handle) {
    const agent = net.pds.getClient()
    const name = handle.split('.')[0]
    await agent.createAccount({ email: `${name}@test.com`, handle, password: `${name}-pass` })
    const did = agent.session.did
    agents.set(did, agent)
    agents.set(handle, agent)
    return { did, handle }
  }

  function agentFor(repo) {
    const agent = agents.get(repo)
    if (!agent) throw new Error(`unknown repo ${repo}`)
    return agent
  }

  async function createRecord(repo, collection, rkey, record) {
    const agent = agentFor(repo)
    const res = await agent.com.atproto.repo.createRecord({
      repo: agent.session.did, collection, rkey, record, validate: false,
    })
    return { uri: res.data.uri, cid: res.data.cid, rev: res.data.commit && res.data.commit.rev }
  }

  const accounts = []
  for (const acc of spec.accounts || []) {
    const a = await createAccount(acc.handle)
    accounts.push(a)
    for (const r of acc.records || []) {
      await createRecord(a.did, r.collection, r.rkey, r.record)
    }
  }

  let closing = false
  async function shutdown(code) {
    if (closing) return
    closing = true
    try {
      await net.close()
    } catch (e) {
      console.error('devnet: close failed', e)
    }
    process.exit(code)
  }
  process.on('SIGTERM', () => shutdown(0))
  process.on('SIGINT', () => shutdown(0))

  out({ pds: net.pds.url, plc: net.plc.url, accounts })

  const ops = {
    create: (c) => createRecord(c.repo, c.collection, c.rkey, c.record),
    put: async (c) => {
      const agent = agentFor(c.repo)
      const res = await agent.com.atproto.repo.putRecord({
        repo: agent.session.did, collection: c.collection, rkey: c.rkey, record: c.record,
        validate: false,
      })
      return { uri: res.data.uri, cid: res.data.cid, rev: res.data.commit && res.data.commit.rev }
    },
    delete: async (c) => {
      const agent = agentFor(c.repo)
      const res = await agent.com.atproto.repo.deleteRecord({
        repo: agent.session.did, collection: c.collection, rkey: c.rkey,
      })
      return { rev: res.data.commit && res.data.commit.rev }
    },
    createMany: async (c) => {
      const agent = agentFor(c.repo)
      const results = []
      let rev
      for (let i = 0; i < c.writes.length; i += 200) {
        const writes = c.writes.slice(i, i + 200).map((w) => ({
          $type: 'com.atproto.repo.applyWrites#create',
          collection: w.collection,
          ...(w.rkey ? { rkey: w.rkey } : {}),
          value: w.record,
        }))
        const res = await agent.com.atproto.repo.applyWrites({
          repo: agent.session.did, writes, validate: false,
        })
        for (const r of res.data.results || []) results.push({ uri: r.uri, cid: r.cid })
        rev = res.data.commit && res.data.commit.rev
      }
      return { results, rev }
    },
    createAccount: (c) => createAccount(c.handle),
    updateHandle: async (c) => {
      const agent = agentFor(c.repo)
      await agent.com.atproto.identity.updateHandle({ handle: c.handle })
      agents.set(c.handle, agent)
      return { handle: c.handle }
    },
  }

  // Commands run one at a time, in order, so a test sees its writes applied in sequence.
  const rl = readline.createInterface({ input: process.stdin })
  let chain = Promise.resolve()
  rl.on('line', (line) => {
    if (!line.trim()) return
    chain = chain.then(async () => {
      let cmd
      try {
        cmd = JSON.parse(line)
        const op = ops[cmd.op]
        if (!op) throw new Error(`unknown op ${cmd.op}`)
        out({ id: cmd.id, ok: true, ...(await op(cmd)) })
      } catch (e) {
        out({ id: cmd && cmd.id, ok: false, error: String((e && e.message) || e) })
      }
    })
  })
  rl.on('close', () => chain.then(() => shutdown(0)))
}

main().catch((e) => {
  console.error('devnet: failed to start', e)
  process.exit(1)
})
