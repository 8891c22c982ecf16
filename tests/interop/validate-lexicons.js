#!/usr/bin/env node
// Checks the project's lexicons with the reference implementation (@atproto/lexicon):
//   node validate-lexicons.js LEXICON_DIR [SAMPLES.json]
// Every LEXICON_DIR/**/*.json must parse as a lexicon document and every ref in it must
// resolve. SAMPLES.json is an array of {"nsid": ..., "record": {...}} validated as records, or
// {"nsid", "params": {...}} / {"nsid", "output": {...}}: a query's parameters (as the server read
// them from the query string, arrays for repeated names) or its JSON answer.
// Prints one JSON line: {"docs": N, "errors": [...], "results": [{"ok": bool, "error"?: ...}]}
// and exits 1 when a document is invalid.
'use strict'
const fs = require('fs')
const path = require('path')
const { Lexicons, parseLexiconDoc, jsonToLex } = require('@atproto/lexicon')

function jsonFiles(dir) {
  const out = []
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name)
    if (ent.isDirectory()) out.push(...jsonFiles(p))
    else if (ent.name.endsWith('.json')) out.push(p)
  }
  return out.sort()
}

// Every "ref" and union "refs" entry, as Lexicons.add left them (absolute lex URIs).
function refsOf(node, acc) {
  if (Array.isArray(node)) node.forEach((n) => refsOf(n, acc))
  else if (node && typeof node === 'object') {
    if (node.type === 'ref' && typeof node.ref === 'string') acc.push(node.ref)
    if (node.type === 'union' && Array.isArray(node.refs)) acc.push(...node.refs)
    Object.values(node).forEach((n) => refsOf(n, acc))
  }
  return acc
}

function main() {
  const [dir, samplesFile] = process.argv.slice(2)
  if (!dir) {
    console.error('usage: validate-lexicons.js LEXICON_DIR [SAMPLES.json]')
    process.exit(2)
  }
  const lex = new Lexicons()
  const errors = []
  let docs = 0
  for (const file of jsonFiles(dir)) {
    try {
      const doc = parseLexiconDoc(JSON.parse(fs.readFileSync(file, 'utf8')))
      lex.add(doc)
      docs++
    } catch (e) {
      errors.push(`${path.relative(dir, file)}: ${e.message.split('\n')[0]}`)
    }
  }
  for (const doc of lex) {
    for (const ref of refsOf(doc.defs, [])) {
      try {
        lex.getDefOrThrow(ref)
      } catch (e) {
        errors.push(`${doc.id}: unresolved ref ${ref}`)
      }
    }
  }
  const results = []
  if (samplesFile) {
    for (const { nsid, record, params, output } of JSON.parse(fs.readFileSync(samplesFile, 'utf8'))) {
      try {
        if (params !== undefined) lex.assertValidXrpcParams(nsid, params)
        else if (output !== undefined) lex.assertValidXrpcOutput(nsid, jsonToLex(output))
        else lex.assertValidRecord(nsid, jsonToLex(record))
        results.push({ ok: true })
      } catch (e) {
        results.push({ ok: false, error: e.message })
      }
    }
  }
  process.stdout.write(JSON.stringify({ docs, errors, results }) + '\n')
  process.exit(errors.length ? 1 : 0)
}

module.exports = { jsonFiles }

if (require.main === module) main()
