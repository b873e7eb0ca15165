-- Argo CD health check for finetune.dev/FineTuneJob (argocd-cm key
-- resource.customizations.health.finetune.dev_FineTuneJob; see docs/install.md).
-- Reads only the status the operator writes: phase, observedGeneration, reason/message, progress,
-- queue, evaluation and serving. Argo runs it with gopher-lua (Lua 5.1): `obj` in, `hs` out.
local hs = {}
local status = obj.status

local function text(value)
  if value == nil or value == "" then
    return nil
  end
  return tostring(value)
end

local function first(...)
  for i = 1, select("#", ...) do
    local value = text(select(i, ...))
    if value ~= nil then
      return value
    end
  end
  return nil
end

if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the job"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
local progress = status.progress or {}
local queue = status.queue or {}
local evaluation = status.evaluation or {}
local serving = status.serving or {}

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = first(evaluation.score and ("Succeeded: " .. evaluation.score), status.message, "Succeeded")
elseif phase == "Serving" then
  if serving.readyReplicas ~= nil and serving.readyReplicas < 1 then
    hs.status = "Degraded"
    hs.message = "Serving " .. first(serving.endpoint, "") .. ": no ready replica"
  else
    hs.status = "Healthy"
    hs.message = first(serving.endpoint and ("Serving at " .. serving.endpoint), status.message, "Serving")
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Failed: " .. first(status.message, status.reason, "see the job's conditions and events")
elseif phase == "Rejected" then
  hs.status = "Degraded"
  hs.message = "Rejected by the evaluation gates: " .. first(status.message, evaluation.score, status.reason, "see status.evaluation.gates")
elseif phase == "Queued" then
  hs.status = "Suspended"
  local where = first(queue.name, "the queue")
  if queue.position ~= nil then
    where = where .. " at position " .. tostring(queue.position)
  end
  hs.message = "Waiting for admission in " .. where .. (text(queue.message) and (": " .. queue.message) or "")
elseif phase == "Pending" or phase == "Validating" or phase == "Training" or phase == "Evaluating" or phase == "Uploading"
  or phase == "Deploying" then
  hs.status = "Progressing"
  local detail = status.message
  if phase == "Training" then
    detail = first(progress.summary, status.message)
  end
  hs.message = phase .. (text(detail) and (": " .. detail) or "")
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
