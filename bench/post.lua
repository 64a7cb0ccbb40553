-- wrk script: POST JSON bodies read from a file, one body per line, in turn.
--
--   wrk -t2 -c8 -d10s -s bench/post.lua http://127.0.0.1:8000 -- BODIES_FILE PATH
--
-- BODIES_FILE and PATH may also come from the environment (BENCH_BODIES,
-- BENCH_PATH); PATH defaults to the URL's path. Several different bodies are
-- cycled so that no layer can answer from one cached request.
-- done() prints one line of JSON for bench/run.py.

local counter = 0

function setup(thread)
   -- Each thread starts at a different body, so threads do not send in lockstep.
   thread:set("offset", counter)
   counter = counter + 1
end

function init(args)
   local file = args[1] or os.getenv("BENCH_BODIES")
   local path = args[2] or os.getenv("BENCH_PATH") or wrk.path
   if not file then
      error("post.lua: name the bodies file: wrk ... -s post.lua URL -- BODIES_FILE PATH")
   end
   local handle = assert(io.open(file, "r"))
   local headers = { ["Content-Type"] = "application/json" }
   prepared = {}
   for line in handle:lines() do
      if line ~= "" then
         -- Pre-built once: formatting a request per call is what wrk's docs warn against.
         table.insert(prepared, wrk.format("POST", path, headers, line))
      end
   end
   handle:close()
   if #prepared == 0 then
      error("post.lua: no bodies in " .. file)
   end
   index = (offset or 0) % #prepared
end

function request()
   index = index % #prepared + 1
   return prepared[index]
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      '{"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, "errors": '
         .. '{"connect": %.0f, "read": %.0f, "write": %.0f, "timeout": %.0f, "status": %.0f}, '
         .. '"latency_p50_us": %.0f, "latency_p99_us": %.0f}\n',
      summary.requests, summary.duration, summary.bytes,
      errors.connect, errors.read, errors.write, errors.timeout, errors.status,
      latency:percentile(50), latency:percentile(99)
   ))
end
