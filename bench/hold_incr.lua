-- wrk script: POST io.atcr.hold.incrementStats. Script argument 1 = events per request
-- (1: a single-event body, N > 1: {"events": [...N]}); the token comes from HOLD_BENCH_TOKEN.
local bodies = {}
local nbodies = 64
local i = 0

local function event(k)
    return string.format('{"did":"did:plc:bench%dxxxxxxxxxxxxxxxxx","repository":"bench/app%d","event":"%s"}',
        k % 8, k % 5, (k % 4 == 0) and "push" or "pull")
end

function init(args)
    local batch = tonumber(args[1] or "1")
    for b = 1, nbodies do
        if batch == 1 then
            bodies[b] = event(b)
        else
            local evs = {}
            for e = 1, batch do evs[e] = event(b * 7 + e) end
            bodies[b] = '{"events":[' .. table.concat(evs, ",") .. ']}'
        end
    end
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer " .. (os.getenv("HOLD_BENCH_TOKEN") or "bench")
end

function request()
    i = i % nbodies + 1
    return wrk.format(nil, "/xrpc/io.atcr.hold.incrementStats", nil, bodies[i])
end
