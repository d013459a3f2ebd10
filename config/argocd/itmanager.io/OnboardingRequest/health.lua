-- Argo CD health of itmanager.io/OnboardingRequest, from the kstatus conventions
-- itmanager follows (docs/gitops.md), so Argo CD and Flux agree:
--   no status, or status.observedGeneration behind metadata.generation:
--     Progressing (itmanager has not looked at this spec yet);
--   Stalled=True: Degraded (only a person fixes it);
--   Reconciling=True: Progressing (itmanager finishes it by itself);
--   Ready=True: Healthy;
--   Ready=False otherwise: Progressing (Suspended while it awaits approval).
-- Argo CD runs custom health scripts without Lua's standard libraries
-- (base, table and package only): nothing here uses string, math or os.
local hs = {status = "Progressing", message = "Waiting for itmanager to reconcile"}
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for itmanager to observe generation " .. generation
  return hs
end
local ready, reconciling, stalled
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      ready = c
    elseif c.type == "Reconciling" and c.status == "True" then
      reconciling = c
    elseif c.type == "Stalled" and c.status == "True" then
      stalled = c
    end
  end
end
local function say(c)
  if c.message ~= nil and c.message ~= "" then
    return (c.reason or c.type) .. ": " .. c.message
  end
  return c.reason or c.type
end
if stalled ~= nil then
  return {status = "Degraded", message = say(stalled)}
end
if reconciling ~= nil then
  return {status = "Progressing", message = say(reconciling)}
end
if ready == nil then
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.status == "True" then
  return {status = "Healthy", message = say(ready)}
end
if ready.reason == "AwaitingApproval" then
  return {status = "Suspended", message = say(ready)}
end
return {status = "Progressing", message = say(ready)}
