-- wrk script of `cargo bench --bench replicas`: the notifications of benches/webhook.lua, with
-- wrk's threads spread over the hosts in GWSYNC_BENCH_HOSTS ("host:port,host:port,…"), one
-- host per thread in turn, as a load balancer in front of the replicas would spread
-- connections. Without hosts every thread goes to the URL's host.
dofile(os.getenv("GWSYNC_BENCH_LUA_DIR") .. "/webhook.lua")

local hosts = {}
for h in string.gmatch(os.getenv("GWSYNC_BENCH_HOSTS") or "", "[^,]+") do
  hosts[#hosts + 1] = h
end
local next_host = 0

function setup(thread)
  if #hosts > 0 then
    next_host = next_host % #hosts + 1
    local host, port = hosts[next_host]:match("^(.+):(%d+)$")
    thread.addr = wrk.lookup(host, port)[1]
  end
end
