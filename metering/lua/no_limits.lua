-- The limit hooks when the caller brings no rate limits: nothing to check, count or give back.
local function limits_check(purchased, k0, a0, now) return 0, {} end
local function limits_commit(k0, a0, out, gid, expiry) return false end

local function limits_lease(purchased, k0, a0, want) return {} end

local function limits_release(key, kind, amount, gid) end
