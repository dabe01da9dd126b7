-- wrk script of `cargo bench --bench webhook`: Google-shaped push notifications.
--
-- Each request is what Google POSTs for a calendar change (NOTES 1.6): no body, the X-Goog-*
-- headers and Google's User-Agent, round-robin over the live channels listed in the file named
-- by the first script argument (one channel a line: id, token and resource id, tab-separated),
-- each channel's X-Goog-Message-Number rising by a few thousand a message as Google's does.
-- At the end it prints one `wrk-result` line the bench reads (latencies in microseconds).

local channels = {}
local turn = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk -s webhook.lua URL -- CHANNELS_FILE")
  end
  for line in io.lines(path) do
    local id, token, resource = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)$")
    if id then
      channels[#channels + 1] = { id = id, token = token, resource = resource, number = 1302465 }
    end
  end
  if #channels == 0 then
    error("no channels in " .. path)
  end
end

function request()
  turn = turn % #channels + 1
  local c = channels[turn]
  c.number = c.number + 1 + (turn * 7919 + c.number) % 4999
  return wrk.format("POST", nil, {
    ["User-Agent"] = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
    ["Content-Length"] = "0",
    ["X-Goog-Channel-ID"] = c.id,
    ["X-Goog-Channel-Token"] = c.token,
    ["X-Goog-Channel-Expiration"] = "Tue, 19 Nov 2030 01:13:52 GMT",
    ["X-Goog-Message-Number"] = tostring(c.number),
    ["X-Goog-Resource-ID"] = c.resource,
    ["X-Goog-Resource-State"] = "exists",
    ["X-Goog-Resource-URI"] = "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
  })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "wrk-result requests=%d micros=%d errors=%d non2xx=%d p50=%d p90=%d p99=%d max=%d\n",
    summary.requests,
    summary.duration,
    e.connect + e.read + e.write + e.timeout,
    e.status,
    latency:percentile(50),
    latency:percentile(90),
    latency:percentile(99),
    latency.max
  ))
end
