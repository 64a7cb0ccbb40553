-- wrk script: POST Open Inference Protocol bodies with the binary tensor extension, in turn.
--
--   wrk -t2 -c8 -d10s -s bench/post_binary.lua http://127.0.0.1:8000 -- BODIES_FILE PATH BODY_BYTES HEADER_BYTES
--
-- BODIES_FILE holds bodies of BODY_BYTES bytes each, back to back (raw float64s
-- may hold any byte, newlines too, so they are cut by size, not by line); each
-- starts with HEADER_BYTES bytes of JSON, which the Inference-Header-Content-Length
-- header announces. done() prints the same JSON line as post.lua, which
-- bench/wrk.py reads.

local counter = 0

function setup(thread)
   -- Each thread starts at a different body, so threads do not send in lockstep.
   thread:set("offset", counter)
   counter = counter + 1
end

function init(args)
   local file, path = args[1], args[2]
   local size, header = tonumber(args[3]), tonumber(args[4])
   if not (file and path and size and header) or size <= header then
      error("post_binary.lua: wrk ... -s post_binary.lua URL -- BODIES_FILE PATH BODY_BYTES HEADER_BYTES")
   end
   local handle = assert(io.open(file, "rb"))
   local headers = {
      ["Content-Type"] = "application/octet-stream",
      ["Inference-Header-Content-Length"] = tostring(header),
   }
   prepared = {}
   while true do
      local body = handle:read(size)
      if not body then
         break
      end
      if #body ~= size then
         error("post_binary.lua: " .. file .. " is not a whole number of " .. size .. "-byte bodies")
      end
      -- Pre-built once, as in post.lua: formatting a request per call is what wrk's docs warn against.
      table.insert(prepared, wrk.format("POST", path, headers, body))
   end
   handle:close()
   if #prepared == 0 then
      error("post_binary.lua: no bodies in " .. file)
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
