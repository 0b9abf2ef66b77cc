-- Argo CD health check for the kubepam kinds whose health is their kstatus conditions alone
-- (AccessPolicy, CheckoutPolicy, Project, Server, WorkloadRole): Healthy while Ready, Degraded when
-- Stalled (an invalid spec, or for a Server an enrolled agent that stopped reporting: AgentSilent),
-- Progressing otherwise, and while the operator has not written a status or observed the latest
-- generation. hack/gen_health.py uses it for every kind directory without a health.lua of its own.
-- Every status and why: charts/kubepam/health/README.md.
local hs = {}

local function condition(conditionType)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function isTrue(conditionType)
  local c = condition(conditionType)
  return c ~= nil and c.status == "True"
end

local function says(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubepam operator"
  return hs
end

local function generationChanged()
  local observed = obj.status.observedGeneration
  return obj.metadata.generation ~= nil and observed ~= nil and observed ~= obj.metadata.generation
end

if generationChanged() then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubepam operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

if isTrue("Stalled") then
  hs.status = "Degraded"
  hs.message = says(condition("Stalled"), "Stalled")
  return hs
end

if isTrue("Ready") then
  hs.status = "Healthy"
  hs.message = says(condition("Ready"), "Ready")
  return hs
end

if isTrue("Reconciling") then
  hs.status = "Progressing"
  hs.message = says(condition("Reconciling"), "Reconciling")
  return hs
end

hs.status = "Progressing"
hs.message = says(condition("Ready"), "Waiting for the kubepam operator")
return hs
