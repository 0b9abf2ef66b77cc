-- Argo CD health check for kubepam.io/Checkout: a checkout's life ends in CheckedIn, Expired, Cancelled
-- or Denied, and each is Healthy: nothing is broken and nothing is left to do (a denial is a decision
-- of the policies or approvers, not a fault; the message says why). Active is Healthy. A checkout waits
-- on a person while its approval request is pending, or while it is Offered and not set to claim: both
-- Suspended. Pending, Queued (the line moves by itself: every hold ends) and CheckinInProgress are
-- Progressing. A finished checkout is never reconciled again, so a later edit leaves observedGeneration
-- behind for good: its phase is read before the generation. Progressing while the operator has not
-- written a status, or has not observed the latest generation. Every status and why:
-- charts/kubepam/health/README.md.
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
if phase == "CheckedIn" or phase == "Expired" or phase == "Cancelled" or phase == "Denied" then
  hs.status = "Healthy"
  hs.message = phaseSays(phase, obj.status.message)
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

if phase == "Active" then
  hs.status = "Healthy"
  hs.message = phaseSays(phase, obj.status.message)
  return hs
end

if phase == nil then
  phase = "Pending"
end
local request = obj.status.approvalRequest
if phase == "Pending" and request ~= nil and request.state == "Pending" then
  hs.status = "Suspended"
  hs.message = phaseSays("Waiting for approval", obj.status.message)
  return hs
end

local claiming = obj.spec ~= nil and obj.spec.claim == true
if phase == "Offered" and not claiming then
  hs.status = "Suspended"
  hs.message = phaseSays("Waiting for the requester to claim it", obj.status.message)
  return hs
end

hs.status = "Progressing"
hs.message = phaseSays(phase, obj.status.message)
return hs
