-- Argo CD health check for kubepam.io/SSHCertificateRequest and X509CertificateRequest: a request is decided once. Issued is
-- Healthy, also after status.validBefore (a short-lived certificate lapses by design; the request is
-- done). Denied is Healthy with the reason: a decision of the AccessPolicies, not a fault (the operator
-- marks it Stalled for kstatus, which has no word for a final refusal). Pending is Progressing.
-- Progressing while the operator has not written a status, or has not observed the latest generation.
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

local function phaseSays(phase, detail)
  if detail ~= nil and detail ~= "" then
    return phase .. ": " .. detail
  end
  return phase
end

local phase = obj.status.phase
if phase == "Issued" then
  hs.status = "Healthy"
  if obj.status.validBefore ~= nil then
    hs.message = phaseSays(phase, "certificate valid until " .. obj.status.validBefore)
  else
    hs.message = phase
  end
  return hs
end

if phase == "Denied" then
  hs.status = "Healthy"
  hs.message = phaseSays(phase, obj.status.reason)
  return hs
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

hs.status = "Progressing"
hs.message = phaseSays(phase or "Pending", says(condition("Reconciling"), "waiting for the kubepam operator"))
return hs
