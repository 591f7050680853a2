-- The admission script's limit hooks when the caller brings no rate limits: nothing to check.
local function limits_check(purchased, k0, a0) return 0, {} end
local function limits_commit(k0, a0, out) end

local function limits_lease(purchased, k0, a0, want) return {} end
