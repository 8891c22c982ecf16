#!/usr/bin/env node
// Checks Jetstream v2 traffic against the Jetstream lexicons with the reference implementation
// (@atproto/lexicon), so that the local stand-in (tests/tools/jetstream_replay) cannot drift
// from the published wire:
//   node validate-frames.js LEXICON_DIR FRAMES.jsonl [REQUESTS.json]
// LEXICON_DIR holds network/bsky/jetstream/subscribeEvents.json and the
// com.atproto.sync.subscribeRepos it refers to (tests/fixtures/jetstream-lexicons). Each line
// of FRAMES.jsonl is one text frame as received: a message frame's payload must validate as
// a message of network.bsky.jetstream.subscribeEvents, an error frame must name an error the
// lexicon declares. REQUESTS.json is an array of request targets ("/xrpc/...?a=b") whose query
// must validate as the subscription's parameters.
// Prints one JSON line: {"frames": N, "kinds": {...}, "requests": N, "errors": [...]} and
// exits 1 when anything failed.
'use strict'
const fs = require('fs')
const { Lexicons, jsonToLex } = require('@atproto/lexicon')
const { jsonFiles } = require('./validate-lexicons')

const NSID = 'network.bsky.jetstream.subscribeEvents'

// A query string decoded the way an XRPC server decodes it for this method's parameters.
function params(def, query) {
  const out = {}
  for (const [k, v] of new URLSearchParams(query)) {
    const spec = def.parameters.properties[k]
    if (!spec) continue // unknown parameters are ignored, as XRPC servers do
    const value = (spec.type === 'array' ? spec.items.type : spec.type) === 'integer' ? Number(v) : v
    if (spec.type === 'array') (out[k] = out[k] || []).push(value)
    else out[k] = value
  }
  return out
}

function main() {
  const [dir, framesFile, requestsFile] = process.argv.slice(2)
  if (!dir || !framesFile) {
    console.error('usage: validate-frames.js LEXICON_DIR FRAMES.jsonl [REQUESTS.json]')
    process.exit(2)
  }
  const lex = new Lexicons()
  for (const f of jsonFiles(dir)) lex.add(JSON.parse(fs.readFileSync(f, 'utf8')))
  const def = lex.getDefOrThrow(NSID)
  const declared = new Set(def.errors.map((e) => e.name))
  const errors = []
  const kinds = {}
  const lines = fs.readFileSync(framesFile, 'utf8').split('\n').filter((l) => l.length)
  lines.forEach((line, i) => {
    try {
      const frame = JSON.parse(line)
      if (frame.$type === 'message') {
        const keys = Object.keys(frame).sort().join(',')
        if (keys !== '$type,payload') throw new Error(`message frame members: ${keys}`)
        lex.assertValidXrpcMessage(NSID, jsonToLex(frame.payload))
        const kind = frame.payload.$type.split('#')[1]
        kinds[kind] = (kinds[kind] || 0) + 1
      } else if (frame.$type === 'error') {
        if (!declared.has(frame.error)) throw new Error(`undeclared error ${frame.error}`)
        if (frame.message !== undefined && typeof frame.message !== 'string')
          throw new Error('error message is not a string')
        kinds.error = (kinds.error || 0) + 1
      } else {
        throw new Error(`frame $type ${JSON.stringify(frame.$type)}`)
      }
    } catch (e) {
      errors.push(`frame ${i + 1}: ${e.message.split('\n')[0]}: ${line.slice(0, 200)}`)
    }
  })
  const requests = requestsFile ? JSON.parse(fs.readFileSync(requestsFile, 'utf8')) : []
  for (const target of requests) {
    try {
      const [p, q = ''] = target.split('?')
      if (p !== `/xrpc/${NSID}`) throw new Error(`path ${p}`)
      lex.assertValidXrpcParams(NSID, params(def, q))
    } catch (e) {
      errors.push(`request ${target}: ${e.message.split('\n')[0]}`)
    }
  }
  process.stdout.write(
    JSON.stringify({ frames: lines.length, kinds, requests: requests.length, errors }) + '\n',
  )
  process.exit(errors.length ? 1 : 0)
}

main()
