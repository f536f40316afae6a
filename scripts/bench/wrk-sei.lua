-- wrk script for scripts/bench.sh: posts the SEI run of `cistern bench ingest` (~2.2 KB: 2 stages
-- x 3 steps, 2 commits, params, an artifact) to /v1/custom-cicd, each request a new execution id
-- except 10 % that repeat an earlier one (updates). Start times lie in the 10 minutes before the
-- load began, as the load generator's do.
--
--   WRK_KEY=<api key> WRK_PREFIX=wrk wrk -t1 -c64 -d15s -s scripts/bench/wrk-sei.lua http://127.0.0.1:8080

local key = os.getenv("WRK_KEY") or "none"
local prefix = os.getenv("WRK_PREFIX") or "wrk"
local t0 = os.time() * 1000
local made = 0
local thread_id = 0

function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  math.randomseed(os.time() + thread_id)
  wrk.method = "POST"
  wrk.path = "/v1/custom-cicd"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "ApiKey " .. key
end

local stage = '{"displayName":"%s","displayDescription":"%s stage","result":"%s","state":"FINISHED","durationInMillis":%d,"startTime":%d,"steps":['
  .. '{"displayName":"%s-step-0","result":"SUCCESS","state":"FINISHED","durationInMillis":6000},'
  .. '{"displayName":"%s-step-1","result":"SUCCESS","state":"FINISHED","durationInMillis":6100},'
  .. '{"displayName":"%s-step-2","result":"SUCCESS","state":"FINISHED","durationInMillis":6200}]}'

local run = '{"pipeline":"service-%d","job_full_name":"org/service-%d/main","qualified_name":"org/service-%d/main",'
  .. '"instance_name":"bench-jenkins","instance_guid":"b0000000-0000-4000-8000-%012d","start_time":%d,'
  .. '"duration":%d,"result":"%s","execution_id":"%s-%d-%d","build_number":%d,'
  .. '"user_id":"SCMTrigger","repo_url":"https://github.com/acme/service.git","branch_name":"%s",'
  .. '"project_name":"Platform","scm_commit_ids":["%s","%s"],'
  .. '"job_run_params":[{"type":"StringParameterValue","name":"TARGET","value":"qa"},{"type":"BooleanParameterValue","name":"FAST","value":true}],'
  .. '"ci":true,"cd":%s,"artifacts":[{"input":false,"output":true,"type":"container","location":"registry.acme.com/service","name":"service","qualifier":"1.%d"}],'
  .. '"trigger_chain":[{"id":"SCMTrigger","type":"SCMTriggerCause"}],"job_run":{"stages":[%s,%s]},'
  .. '"web_url":"https://jenkins.acme.com/job/service/%d/"}'

function request()
  local n
  if made > 0 and math.random() < 0.1 then
    n = math.random(0, made - 1)
  else
    n = made
    made = made + 1
  end
  local result = (n % 7 == 0) and "FAILURE" or "SUCCESS"
  local start = t0 - 600000 + (n % 500) * 1000
  local svc = n % 50
  local body = string.format(run, svc, svc, svc, n % 4, start, 65000 + n % 1000, result,
    prefix, thread_id, n, n, (n % 5 == 0) and "release" or "main",
    "00000000000000000000000000000000" .. string.format("%08x", n),
    "cccccccccccccccccccccccccccccccc" .. string.format("%08x", n),
    (n % 4 == 0) and "true" or "false", n,
    string.format(stage, "build", "build", result, 20000, start, "build", "build", "build"),
    string.format(stage, "test", "test", result, 45000, start + 25000, "test", "test", "test"),
    n)
  return wrk.format(nil, nil, nil, body)
end
